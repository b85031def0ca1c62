"""The agent's one settings object, read from the environment.

Everything the service can be told lives here, so nothing else calls ``os.getenv``. The validators
refuse configurations that would be unsafe in a cluster: placeholder secrets,
authentication switched off implicitly, and a CORS wildcard with credentials.
``AUTH_MODE=disabled`` stays possible, but only when set explicitly (the local stack).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ragkeeper_knowledge.embedding import EMBEDDING_VARIABLES, EmbeddingConfig, embedding_env
from ragkeeper_knowledge.rerank import RERANK_VARIABLES, RerankConfig, rerank_env

# Secrets that appear in tutorials and templates; refusing them catches copy-paste deployments.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "your-secret",
        "your-jwt-secret",
        "your-super-secret-jwt-token-with-at-least-32-characters-long",
        "super-secret-jwt-token-with-at-least-32-characters-long",
        "replace-me",
        "xxx",
    }
)
MIN_HS256_SECRET_BYTES = 32


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def https_origin(url: str, setting: str) -> str:
    """The ``scheme://host[:port]`` of an https URL (http only for localhost), else ValueError.

    The page's Content-Security-Policy allows these origins in ``connect-src``, so
    they must be exact, credential-free and encrypted outside a developer machine.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS):
        raise ValueError(f"{setting} must be an https:// URL (http:// only for localhost)")
    if not parts.netloc or parts.username or parts.password:
        raise ValueError(f"{setting} must be a plain https://host URL")
    return f"{parts.scheme}://{parts.netloc}"


# The variables of the nested settings (EMBEDDING_*, RERANK_*), by field, for error messages.
NESTED_VARIABLES = {"embedding": EMBEDDING_VARIABLES, "rerank": RERANK_VARIABLES}


def describe_invalid(exc: ValidationError) -> str:
    """One line per refused setting: its name and pydantic's message, never the value given.

    ``str(exc)`` quotes each ``input_value``, which would print secrets such as
    AUTH_JWT_SECRET or OTEL_EXPORTER_OTLP_HEADERS to the pod's log. A nested field is named
    by its variable and its place, e.g. ``RERANK_CANDIDATES (rerank.candidates)``.
    """
    lines = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        where = ".".join(loc) or "settings"
        if len(loc) == 1 and loc[0] not in NESTED_VARIABLES:
            where = loc[0].upper()
        elif len(loc) == 2 and loc[1] in NESTED_VARIABLES.get(loc[0], {}):
            where = f"{NESTED_VARIABLES[loc[0]][loc[1]]} ({where})"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Agent API configuration (environment variables, case-insensitive)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """``/metrics`` on its own port (the chart's); 0 serves it on PORT (the local stack)."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    """Streams still running this long after SIGTERM end with a final error line."""

    # --- database and retrieval
    database_url: str = Field(min_length=1)
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    search_k: int = Field(default=5, ge=1, le=50)
    search_vector_weight: float = Field(default=1.0, ge=0, le=10)
    search_text_weight: float = Field(default=1.0, ge=0, le=10)
    """Each arm's weight in the reciprocal-rank fusion; 0 turns an arm off (docs/retrieval.md)."""

    # --- embedder: the EMBEDDING_* variables, shared with the ingestion job (embedding_env)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    # --- second-stage reranking service: the RERANK_* variables (rerank_env); off by default
    rerank: RerankConfig = Field(default_factory=RerankConfig)

    # --- language model
    llm_provider: str = ""
    """openai, openrouter, ollama, vllm or any OpenAI-compatible name; empty = offline."""
    llm_base_url: str = ""
    llm_api_key: SecretStr = SecretStr("")
    llm_choice: str = ""
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_vision: bool = False
    """The model accepts images (LLM_VISION): an attached image goes to it as an image part;
    false (and always offline): the image's text is read by OCR and given as text."""
    agent_max_requests: int = Field(default=8, ge=1)
    """Model requests per turn (tool loops included) before the run is stopped."""

    # --- tools
    sql_tool_enabled: bool = True
    """Offer the read-only SQL tool over tabular rows (the agent's ``query_tabular_rows``, the
    MCP endpoint's ``query_rows``); false: neither is offered."""
    memory_enabled: bool = True
    """Long-term memory per user (docs/agent.md, "Memory"): the save and search tools, the
    memories recalled at each turn and the /api/memories routes; false: none of them (the
    routes answer 404) and nothing is read from or written to the memories table."""
    sql_statement_timeout_ms: int = Field(default=3000, ge=100)
    sql_max_rows: int = Field(default=200, ge=1, le=1000)
    read_document_max_chars: int = Field(default=20_000, ge=1000)
    searxng_url: str = ""
    brave_api_key: SecretStr = SecretStr("")
    brave_api_url: str = "https://api.search.brave.com/res/v1/web/search"
    web_search_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- auth
    auth_mode: Literal["jwt", "disabled"] = "jwt"
    auth_jwt_secret: SecretStr = SecretStr("")
    auth_jwks_url: str = ""
    auth_jwks_cache_seconds: float = Field(default=300.0, ge=0)
    auth_audience: str = "authenticated"
    auth_issuer: str = ""
    auth_leeway_seconds: float = Field(default=30.0, ge=0)
    local_user_id: str = "local"
    """User id assumed when AUTH_MODE=disabled and the body names none."""

    # --- abuse limits
    rate_limit_per_minute: int = Field(default=30, ge=0)
    """Requests per user per sliding minute on chat and search routes; 0 disables."""
    auth_failures_per_minute: int = Field(default=20, ge=0)
    """Failed authentications per client IP per sliding minute; past it the IP gets 429 on
    every authenticated route until the window frees up; 0 disables."""
    public_requests_per_minute: int = Field(default=120, ge=0)
    """Requests per client IP per sliding minute to the unauthenticated routes that do work
    (``/readyz``), counted in each replica's memory; past it 429; 0 disables."""
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Addresses or CIDRs (comma-separated) whose ``X-Forwarded-For`` names the client;
    empty: the socket peer is the client."""
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_query_chars: int = Field(default=8000, ge=1)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    """All text one turn sends the model: history, system messages, question, attachments."""

    # --- browser access
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            # EMBEDDING_* and RERANK_* as the nested `embedding` and `rerank` dicts (keyword
            # arguments still win)
            InitSettingsSource(
                settings_cls,
                init_kwargs={"embedding": embedding_env(), "rerank": rerank_env()},
            ),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _csv_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("cors_origins", "trusted_proxies"):
                if key in data:
                    data = {**data, key: _split_csv(data[key])}
        return data

    @model_validator(mode="after")
    def _safe(self) -> Self:
        if self.auth_mode == "jwt":
            secret = self.auth_jwt_secret.get_secret_value()
            if not secret and not self.auth_jwks_url:
                raise ValueError(
                    "AUTH_MODE=jwt needs AUTH_JWT_SECRET (HS256) or AUTH_JWKS_URL; "
                    "set AUTH_MODE=disabled explicitly for a local stack"
                )
            if secret and (
                secret.lower() in PLACEHOLDER_SECRETS
                or len(secret.encode()) < MIN_HS256_SECRET_BYTES
            ):
                raise ValueError(
                    "AUTH_JWT_SECRET is a placeholder or shorter than 32 bytes; "
                    "generate one with `openssl rand -base64 48`"
                )
        key = self.llm_api_key.get_secret_value()
        if key and key.lower() in PLACEHOLDER_SECRETS | {"your-api-key", "sk-..."}:
            raise ValueError("LLM_API_KEY is a placeholder")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("CORS_ORIGINS='*' cannot be combined with CORS_ALLOW_CREDENTIALS=true")
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE exceeds DB_POOL_MAX_SIZE")
        self._check_limits()
        self._check_oidc()
        return self

    def _check_limits(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR network"
                ) from None
        if self.max_prompt_chars < self.max_query_chars:
            raise ValueError("MAX_PROMPT_CHARS is smaller than MAX_QUERY_CHARS")
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT (0 serves /metrics on PORT)")
        if self.search_vector_weight == 0 and self.search_text_weight == 0:
            raise ValueError("SEARCH_VECTOR_WEIGHT and SEARCH_TEXT_WEIGHT cannot both be 0")

    def _check_oidc(self) -> None:
        if bool(self.web_oidc_issuer) != bool(self.web_oidc_client_id):
            raise ValueError(
                "WEB_OIDC_ISSUER and WEB_OIDC_CLIENT_ID go together: set both for SSO "
                "sign-in on the page, or neither"
            )
        if not self.web_oidc_issuer:
            return
        https_origin(self.web_oidc_issuer, "WEB_OIDC_ISSUER")
        parts = urlsplit(self.web_oidc_issuer)
        if parts.query or parts.fragment:
            raise ValueError("WEB_OIDC_ISSUER must have no query or fragment (OIDC Discovery)")
        if "openid" not in self.web_oidc_scopes.split():
            raise ValueError("WEB_OIDC_SCOPES must include 'openid'")

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_provider or self.llm_base_url or self.llm_choice)

    @property
    def web_search_configured(self) -> bool:
        return bool(self.searxng_url or self.brave_api_key.get_secret_value())

    # --- web chat page (web.py); appended last
    web_enabled: bool = True
    """Serve the chat page at ``/`` (WEB_ENABLED); the API works either way."""
    web_title: str = Field(default="ragkeeper", min_length=1, max_length=80)
    """Page title and heading (WEB_TITLE)."""
    web_supabase_url: str = ""
    """Supabase project URL for e-mail + password sign-in on the page (WEB_SUPABASE_URL)."""
    web_supabase_anon_key: str = ""
    """The project's public anon key, sent to the browser (WEB_SUPABASE_ANON_KEY)."""
    web_oidc_issuer: str = ""
    """OIDC issuer for "Sign in with SSO" (WEB_OIDC_ISSUER); discovery is read from it."""
    web_oidc_client_id: str = ""
    """The provider's public client (no secret; PKCE) for the page (WEB_OIDC_CLIENT_ID)."""
    web_oidc_scopes: str = Field(default="openid profile email", min_length=1)
    """Space-separated scopes the page asks for; must include ``openid`` (WEB_OIDC_SCOPES)."""

    # --- OpenTelemetry trace export (tracing.py); appended last. The standard OTel names.
    otel_exporter_otlp_endpoint: str = ""
    """OTLP/HTTP base URL (``/v1/traces`` is appended); empty with the next one = no export."""
    otel_exporter_otlp_traces_endpoint: str = ""
    """Full OTLP/HTTP traces URL, used as-is; wins over OTEL_EXPORTER_OTLP_ENDPOINT."""
    otel_exporter_otlp_headers: SecretStr = SecretStr("")
    """``name=value,...`` sent with every export (Langfuse: ``Authorization=Basic%20...``)."""
    otel_service_name: str = Field(default="ragkeeper-agent", min_length=1)
    """``service.name`` of the exported spans."""
    otel_include_content: bool = False
    """Record prompts, completions and tool arguments/results in the agent spans (off: they
    hold users' questions and document passages, which a trace backend must not get by default)."""

    # --- Redis for the serving path (redis_cache.py); appended last. Unset: no Redis at all.
    redis_url: SecretStr = SecretStr("")
    """``redis://`` or ``rediss://`` (TLS, verified against the system CAs) ``[user[:password]@]
    host[:port][/db]``; empty: no Redis (the caches are off, the rate limit is Postgres's)."""
    redis_password: SecretStr = SecretStr("")
    """The password, when it is not inside REDIS_URL (the chart passes both from Secrets)."""
    redis_socket_timeout_seconds: float = Field(default=0.1, gt=0, le=60)
    """One command's answer; past it the request goes on without Redis."""
    redis_connect_timeout_seconds: float = Field(default=0.5, gt=0, le=60)
    redis_max_connections: int = Field(default=20, ge=1, le=10_000)
    redis_embedding_ttl_seconds: int = Field(default=604_800, ge=1)
    """How long a query's vector stays cached."""
    redis_search_ttl_seconds: int = Field(default=300, ge=1)
    """How long a search's hits stay cached (a sync makes them unreachable sooner)."""
    redis_retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    """After a failure Redis is skipped this long, then tried again."""
    redis_key_prefix: str = Field(
        default="ragkeeper:", min_length=1, max_length=100, pattern=r"^[!-~]+$"
    )
    """Prefix of every key the agent writes (printable ASCII, no spaces)."""

    # --- the knowledge base as an MCP server (mcp_server.py); appended last
    mcp_enabled: bool = True
    """Serve the search, list, read and SQL tools and the documents as resources to MCP
    clients at ``/mcp`` (streamable HTTP, the API's authentication and rate limit)."""

    # --- files attached to a chat message (attachments.py); appended last
    attachments_enabled: bool = True
    """Accept ``files`` on ``POST /api/pydantic-agent`` and show the page's attach control;
    false: a message with files is refused (422) and the control is hidden."""
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    """One attached file's size (decoded bytes); past it the message is refused with 413."""
    max_message_attachment_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024
    )
    """All files of one message together; past it 413. The chat route's body limit is
    MAX_REQUEST_BYTES plus the base64 size of this."""

    @model_validator(mode="after")
    def _check_attachments(self) -> Self:
        if self.max_message_attachment_bytes < self.max_attachment_bytes:
            raise ValueError(
                "MAX_MESSAGE_ATTACHMENT_BYTES must be at least MAX_ATTACHMENT_BYTES "
                "(a message may carry one file of the largest size)"
            )
        return self

    @model_validator(mode="after")
    def _check_redis(self) -> Self:
        check_redis_url(self.redis_url.get_secret_value(), self.redis_password.get_secret_value())
        return self

    @property
    def chat_body_bytes(self) -> int:
        """The chat route's body limit: MAX_REQUEST_BYTES, plus the base64 size of
        MAX_MESSAGE_ATTACHMENT_BYTES when attachments are on."""
        if not self.attachments_enabled:
            return self.max_request_bytes
        return self.max_request_bytes + -(-self.max_message_attachment_bytes * 4 // 3)

    @property
    def redis_configured(self) -> bool:
        return bool(self.redis_url.get_secret_value())


def check_redis_url(url: str, password: str) -> None:
    """Refuse a REDIS_URL the client could misread, or that disagrees with REDIS_PASSWORD
    (``password``); every message names the variable, never the value."""
    if not url:
        if password:
            raise ValueError("REDIS_PASSWORD is set but REDIS_URL is not")
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("REDIS_URL is not a valid URL") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("REDIS_URL must start with redis:// or rediss:// (TLS)")
    if not parts.hostname:
        raise ValueError("REDIS_URL names no host")
    if port == 0:
        raise ValueError("REDIS_URL has port 0")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError("REDIS_URL's path must be a database number, e.g. /0")
    if parts.query or parts.fragment:
        # redis-py would let query options (timeouts, ssl_cert_reqs=none) override the
        # REDIS_* settings and TLS verification.
        raise ValueError(
            "REDIS_URL must have no query string or fragment; use the REDIS_* settings"
        )
    if parts.password and password and unquote(parts.password) != password:
        # redis-py would use the URL's; a second, different one is a mistake somewhere.
        raise ValueError("REDIS_URL holds a password other than REDIS_PASSWORD; set one of them")
