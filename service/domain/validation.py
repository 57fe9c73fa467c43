"""Every rule of the SMTP profile and its secret objects (SPEC §3-§4).

`validate` checks a whole `ProfileDraft` and reports every bad field at once; it never stops at the
first. Field paths use Keyfactor's JSON names. Messages never quote a secret value, and quote other
values only where that helps and cannot leak one.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from smtpconfig.core import endpoint
from smtpconfig.core.errors import FieldViolation, InvalidArgument, violation
from smtpconfig.core.secret import Secret
from smtpconfig.domain.catalog import ProviderCatalog, problem_of
from smtpconfig.domain.model import (
    CREDENTIAL_FIELDS,
    CREDENTIALS_FOR,
    FIELDS,
    UNSUPPORTED_AUTH_TYPES,
    AuthType,
    InlineSecret,
    KeepStored,
    Profile,
    ProfileDraft,
    ProviderRef,
    RequestHeader,
    SecretDraft,
    SecretInput,
    SecretSource,
)
from smtpconfig.plugin import BadParameters, Parameter

MAX_HOST = 253
MAX_MAILBOX = 254
MAX_LOCAL_PART = 64
MAX_SENDER_NAME = 256
MAX_URL = 2048
MAX_SCOPE = 2048
MAX_AUDIENCE = 2048
MAX_HEADERS = 32
MAX_HEADER_VALUE = 8192
MAX_SECRET_VALUE = 65536
MAX_PARAMETER_VALUE = 4096

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+\Z")
_HTTP_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

# Headers the HTTP client must own: letting a profile set them would break or hijack the request.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "authorization"}
)

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def validate(
    draft: ProfileDraft,
    providers: ProviderCatalog,
    earlier: list[FieldViolation] | None = None,
) -> Profile:
    """Return the valid `Profile` a draft states, or raise `InvalidArgument` listing every bad
    field (including `earlier` ones found by an API-version converter)."""
    found: list[FieldViolation] = list(earlier or [])
    add = found.append

    if draft.id not in (None, 0, 1):
        add(violation("Id", "must be 1: there is only one SMTP profile"))

    for problem in host_problems(draft.host):
        add(violation("Host", problem))

    if draft.port is None or draft.port == 0:
        add(violation("Port", "is required (1-65535)"))
    elif not 1 <= draft.port <= 65535:
        add(violation("Port", "must be between 1 and 65535"))

    auth_type = _auth_type(draft.relay_authentication_type, add)

    for problem in mailbox_problems(draft.sender_account):
        add(violation("SenderAccount", problem))
    for problem in sender_name_problems(draft.sender_name):
        add(violation("SenderName", problem))

    credentials: dict[str, SecretSource | None] = {}
    used = CREDENTIALS_FOR.get(auth_type, ()) if auth_type is not None else ()
    for name in CREDENTIAL_FIELDS:
        if name not in used:
            continue  # not used by this auth type: not stored, so not judged
        credentials[name] = _secret(
            FIELDS[name], getattr(draft, name), providers, add, required_by=auth_type
        )

    oauth = auth_type is AuthType.OAUTH_CLIENT_CREDENTIALS
    if draft.token_endpoint or oauth:
        for problem in token_endpoint_problems(draft.token_endpoint):
            add(violation("TokenEndpoint", problem))
    for problem in scope_problems(draft.scope):
        add(violation("Scope", problem))
    for problem in text_problems(draft.audience, MAX_AUDIENCE):
        add(violation("Audience", problem))
    _headers(draft.request_headers, add)

    if found:
        raise InvalidArgument(found)
    assert auth_type is not None and draft.port is not None
    return Profile(
        host=draft.host,
        port=draft.port,
        relay_authentication_type=auth_type,
        use_ssl=draft.use_ssl,
        sender_account=draft.sender_account,
        sender_name=draft.sender_name,
        token_endpoint=draft.token_endpoint,
        scope=draft.scope,
        audience=draft.audience,
        request_headers=tuple(draft.request_headers),
        **credentials,
    )


def _auth_type(value: int, add) -> AuthType | None:
    if value in UNSUPPORTED_AUTH_TYPES:
        add(
            violation(
                "RelayAuthenticationType",
                f"{value} is a Keyfactor Command authentication type this service does not support;"
                " use 0 (Anonymous), 2 (Basic) or 3 (OAuth client credentials)",
            )
        )
        return None
    try:
        return AuthType(value)
    except ValueError:
        add(
            violation(
                "RelayAuthenticationType",
                "must be 0 (Anonymous), 2 (Basic) or 3 (OAuth client credentials)",
            )
        )
        return None


def validate_secret_object(field: str, given: SecretDraft, providers: ProviderCatalog) -> SecretSource:
    """Check one secret object on its own (CheckSecret); InvalidArgument names what is wrong."""
    found: list[FieldViolation] = []
    source = _secret(field, given, providers, found.append, required_by=None)
    if found or source is None:
        raise InvalidArgument(found or [violation(field, "give SecretValue or Provider")])
    return source


_REQUIRED_BY = {
    None: "is required",
    AuthType.BASIC: "is required when RelayAuthenticationType is 2 (Basic)",
    AuthType.OAUTH_CLIENT_CREDENTIALS: (
        "is required when RelayAuthenticationType is 3 (OAuth client credentials)"
    ),
}


def _secret(
    field: str, given: SecretInput, providers: ProviderCatalog, add, *, required_by: AuthType | None
) -> SecretSource | None:
    """Check one credential field; return the source to store, or None after reporting."""
    if isinstance(given, (InlineSecret, ProviderRef)):
        if isinstance(given, ProviderRef):
            _reference(field, given.provider, given.parameters, providers, add)
        return given
    if given is KeepStored.TOKEN:
        add(
            violation(
                field,
                "UnsupportedPAMSecret stands for a secret provider reference, and none is stored"
                " here; send the value itself",
            )
        )
        return None
    if given is KeepStored.VALUE:
        add(
            violation(
                f"{field}.HasValue",
                "stands for the stored value, which only an update of the profile can keep;"
                " send SecretValue or Provider",
            )
        )
        return None
    if given is None or (given.value is None and given.provider is None):
        add(violation(field, _REQUIRED_BY[required_by]))
        return None

    draft: SecretDraft = given
    if draft.value is not None and draft.provider is not None:
        add(violation(field, "give either SecretValue or Provider, not both"))
        return None
    if draft.value is not None:
        where = field if draft.plain else f"{field}.SecretValue"
        if draft.value == "":
            add(violation(where, _REQUIRED_BY[required_by].replace("is required", "must not be empty")))
            return None
        if len(draft.value) > MAX_SECRET_VALUE:
            add(violation(where, f"is longer than {MAX_SECRET_VALUE} characters"))
            return None
        if draft.parameters:
            add(violation(f"{field}.Parameters", "go only with Provider, not with SecretValue"))
            return None
        return InlineSecret(Secret(draft.value))
    assert draft.provider is not None
    canonical = _reference(field, draft.provider, draft.parameters, providers, add)
    return None if canonical is None else ProviderRef(draft.provider, canonical)


def _reference(field, provider_id, parameters, providers: ProviderCatalog, add) -> dict[str, str] | None:
    """Check a provider reference; return its parameters under their canonical names, or None."""
    if provider_id <= 0:
        add(violation(f"{field}.Provider", "must be the positive Id of a secret provider instance"))
        return None
    instance = providers.instance(provider_id)
    if instance is None:
        add(violation(f"{field}.Provider", f"no secret provider instance has Id {provider_id}"))
        return None
    ok = True
    known = instance.instance_names
    canonical: dict[str, str] = {}
    for key, value in parameters.items():
        spec = known.get(key)
        if spec is None:
            names = ", ".join(p.name for p in instance.instance_parameters) or "none"
            add(
                violation(
                    f"{field}.Parameters.{key}",
                    f"is not an instance parameter of provider type {instance.type_name}"
                    f" (expected: {names})",
                )
            )
            ok = False
        elif spec.name in canonical:
            add(violation(f"{field}.Parameters.{key}", f"gives {spec.name} a second time (under another name)"))
            ok = False
        elif len(value) > MAX_PARAMETER_VALUE or "\x00" in value:
            add(violation(f"{field}.Parameters.{key}", "must be under 4096 characters, without NUL"))
            ok = False
        elif value and (problem := _kind_problem(spec, value)):
            add(violation(f"{field}.Parameters.{key}", problem))
            ok = False
        else:
            canonical[spec.name] = value
    for spec in instance.instance_parameters:
        if spec.required and not canonical.get(spec.name):
            add(
                violation(
                    f"{field}.Parameters.{spec.name}",
                    f"is required by provider type {instance.type_name}",
                )
            )
            ok = False
    return canonical if ok else None


def _kind_problem(parameter: Parameter, value: str) -> str:
    """What the parameter's kind finds wrong with `value` (the provider would get it typed)."""
    try:
        parameter.parse(value)
    except BadParameters as error:
        return problem_of(error)
    return ""


def _headers(headers: tuple[RequestHeader, ...], add) -> None:
    if len(headers) > MAX_HEADERS:
        add(violation("RequestHeaders", f"at most {MAX_HEADERS} headers"))
    seen: set[str] = set()
    for i, header in enumerate(headers):
        where = f"RequestHeaders[{i}]"
        lowered = header.name.lower()
        if not header.name:
            add(violation(f"{where}.Name", "is required"))
        elif not _HTTP_TOKEN.match(header.name):
            add(violation(f"{where}.Name", "must be an HTTP token (letters, digits, !#$%&'*+-.^_`|~)"))
        elif lowered in RESERVED_HEADERS:
            add(violation(f"{where}.Name", f"{header.name} is set by the HTTP client itself"))
        elif lowered in seen:
            add(violation(f"{where}.Name", f"{header.name} is given more than once"))
        seen.add(lowered)
        if any(c in header.value for c in "\r\n\x00"):
            add(violation(f"{where}.Value", "must not contain CR, LF or NUL"))
        elif len(header.value) > MAX_HEADER_VALUE:
            add(violation(f"{where}.Value", f"is longer than {MAX_HEADER_VALUE} characters"))


# --- single-value rules, reusable by other requests (TestRecipient, CLI) ----------------------


def host_problems(host: str) -> list[str]:
    """Problems with a relay host: an RFC 1123 host name or an IP literal, nothing else."""
    if not host:
        return ["is required"]
    if len(host) > MAX_HOST:
        return [f"is longer than {MAX_HOST} characters"]
    if any(c.isspace() for c in host):
        return ["must not contain whitespace"]
    if "://" in host:
        return ["must be a host name or IP address, without a scheme such as smtp://"]
    if "/" in host or "?" in host or "#" in host:
        return ["must be a host name or IP address, without a path"]
    if _ip_literal(host):
        return []
    if ":" in host:
        return ["must not include a port; set Port instead"]
    if not host.isascii():
        return ["must be an ASCII host name; write an internationalised name in its xn-- form"]
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if any(not _LABEL.match(label) for label in labels):
        return [
            "must be a host name (RFC 1123: labels of letters, digits and inner hyphens, 1-63"
            " characters, separated by dots) or an IP address"
        ]
    if labels[-1].isdigit():
        return ["is neither a valid IP address nor a host name (the last label is all digits)"]
    return []


def _ip_literal(host: str) -> bool:
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    # Brackets belong to IPv6 only; a bare IPv6 address is accepted too.
    return not (candidate is not host and address.version == 4)


def mailbox_problems(address: str) -> list[str]:
    """Problems with a mailbox (`local@domain`, RFC 5321 limits), as used for MAIL FROM."""
    if not address:
        return ["is required"]
    if len(address) > MAX_MAILBOX:
        return [f"is longer than {MAX_MAILBOX} characters"]
    if "<" in address or ">" in address:
        return ["must be the address alone; the display name belongs in SenderName"]
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in address):
        return ["must be a bare address such as relay@example.com, without spaces or control characters"]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return ["must be a mailbox address such as relay@example.com"]
    problems = []
    if len(local) > MAX_LOCAL_PART:
        problems.append(f"local part is longer than {MAX_LOCAL_PART} characters")
    elif not _DOT_ATOM.match(local):
        problems.append("local part must be letters, digits and !#$%&'*+/=?^_`{|}~- separated by single dots")
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            problems.append("domain literal must be an IP address in brackets")
    elif domain.endswith(".") or host_problems(domain) or _ip_literal(domain):
        problems.append("domain must be a host name such as example.com")
    return problems


def sender_name_problems(name: str) -> list[str]:
    """Problems with a display name: required, bounded, and no control characters (header
    injection)."""
    if not name or not name.strip():
        return ["is required"]
    if len(name) > MAX_SENDER_NAME:
        return [f"is longer than {MAX_SENDER_NAME} characters"]
    return text_problems(name, MAX_SENDER_NAME)


def text_problems(text: str, limit: int) -> list[str]:
    """Problems with a free-text single-line value."""
    if len(text) > limit:
        return [f"is longer than {limit} characters"]
    if any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text):
        return ["must not contain control characters such as CR, LF, TAB or NUL"]
    return []


def token_endpoint_problems(url: str) -> list[str]:
    """Problems with an OAuth token endpoint URL, read by the token client's own parser."""
    if not url:
        return ["is required when RelayAuthenticationType is 3 (OAuth client credentials)"]
    if len(url) > MAX_URL:
        return [f"is longer than {MAX_URL} characters"]
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return ["must not contain whitespace or control characters"]
    try:
        parts = endpoint.parse(url)
    except endpoint.BadEndpoint:
        return ["must be an absolute URL such as https://login.example.com/oauth2/token"]
    if parts.scheme not in ("https", "http") or not parts.host:
        return ["must be an absolute https URL such as https://login.example.com/oauth2/token"]
    problems = []
    if parts.userinfo:
        problems.append("must not contain user information (user:password@)")
    if parts.fragment:
        problems.append("must not contain a fragment (#...)")
    if parts.given_port is not None and not 1 <= parts.given_port <= 65535:
        problems.append("port must be between 1 and 65535")
    if host_problems(parts.host):
        # Percent-encoded, underscored or numeric-dotted hosts: names a resolver may read its own way.
        problems.append("host must be a host name (internationalised names are fine) or an IP address")
    elif parts.scheme == "http" and not _is_loopback(parts.host):
        problems.append("must use https; plain http is allowed only to a loopback host")
    return problems


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def scope_problems(scope: str) -> list[str]:
    """Problems with an OAuth scope string (RFC 6749 §3.3: tokens separated by single spaces)."""
    if not scope:
        return []
    if len(scope) > MAX_SCOPE:
        return [f"is longer than {MAX_SCOPE} characters"]
    if any(not _SCOPE_TOKEN.match(token) for token in scope.split(" ")):
        return [
            "must be scope tokens separated by single spaces; a token is printable ASCII without"
            ' spaces, " or \\'
        ]
    return []
