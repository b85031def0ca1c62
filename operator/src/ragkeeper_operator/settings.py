"""The operator's one settings object, read from the environment.

Everything the operator needs to know about its deployment lives here: which
image the jobs run, which namespaces it watches, where the database URL and the
embedding API key come from (Secret references, never plain values), the
defaults every generated CronJob gets, and the job policy: which image overrides,
NFS servers and resources a DataSource may ask for, and which label grants a
Secret as Drive credentials (enforced in ``policy.py``). The Helm chart sets these variables on
the operator Deployment; tests build the object directly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ragkeeper_operator.drift import parse_quantity

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# A regex, not a password (B105 does not apply).
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # nosec B105


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class OperatorSettings(BaseSettings):
    """Configuration of the operator process and of the jobs it creates."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # -- what the jobs run ---------------------------------------------------------------
    rag_image: str = Field(
        default="ghcr.io/ragkeeper/ragkeeper-rag:latest",
        min_length=1,
        validation_alias=_env("RAG_IMAGE", "rag_image"),
    )
    image_pull_policy: str = Field(
        default="IfNotPresent",
        pattern="^(Always|IfNotPresent|Never)$",
        validation_alias=_env("RAG_IMAGE_PULL_POLICY", "image_pull_policy"),
    )
    database_secret_name: str = Field(
        default="ragkeeper-database",
        pattern=_DNS_LABEL,
        validation_alias=_env("DATABASE_SECRET_NAME", "database_secret_name"),
    )
    database_secret_key: str = Field(
        default="DATABASE_URL",
        pattern=_SECRET_KEY,
        validation_alias=_env("DATABASE_SECRET_KEY", "database_secret_key"),
    )
    embedding_provider: str | None = Field(
        default=None, validation_alias=_env("EMBEDDING_PROVIDER", "embedding_provider")
    )
    embedding_base_url: str | None = Field(
        default=None, validation_alias=_env("EMBEDDING_BASE_URL", "embedding_base_url")
    )
    embedding_model_choice: str | None = Field(
        default=None, validation_alias=_env("EMBEDDING_MODEL_CHOICE", "embedding_model_choice")
    )
    embedding_api_key_secret_name: str | None = Field(
        default=None,
        pattern=_DNS_LABEL,
        validation_alias=_env("EMBEDDING_API_KEY_SECRET_NAME", "embedding_api_key_secret_name"),
    )
    embedding_api_key_secret_key: str = Field(
        default="EMBEDDING_API_KEY",
        pattern=_SECRET_KEY,
        validation_alias=_env("EMBEDDING_API_KEY_SECRET_KEY", "embedding_api_key_secret_key"),
    )

    # -- job defaults (a DataSource may override resources and the deadline) ---------------
    job_active_deadline_seconds: int = Field(
        default=3600, ge=60, validation_alias=_env("JOB_ACTIVE_DEADLINE_SECONDS")
    )
    job_backoff_limit: int = Field(
        default=2, ge=0, le=10, validation_alias=_env("JOB_BACKOFF_LIMIT")
    )
    job_ttl_seconds_after_finished: int = Field(
        default=86400, ge=0, validation_alias=_env("JOB_TTL_SECONDS_AFTER_FINISHED")
    )
    starting_deadline_seconds: int = Field(
        default=300, ge=10, validation_alias=_env("CRONJOB_STARTING_DEADLINE_SECONDS")
    )
    successful_jobs_history_limit: int = Field(
        default=3, ge=0, le=20, validation_alias=_env("CRONJOB_SUCCESSFUL_JOBS_HISTORY_LIMIT")
    )
    failed_jobs_history_limit: int = Field(
        default=3, ge=0, le=20, validation_alias=_env("CRONJOB_FAILED_JOBS_HISTORY_LIMIT")
    )
    job_cpu_request: str = Field(default="100m", validation_alias=_env("JOB_CPU_REQUEST"))
    job_cpu_limit: str = Field(default="1", validation_alias=_env("JOB_CPU_LIMIT"))
    job_memory_request: str = Field(default="256Mi", validation_alias=_env("JOB_MEMORY_REQUEST"))
    job_memory_limit: str = Field(default="1Gi", validation_alias=_env("JOB_MEMORY_LIMIT"))
    job_tmp_size_limit: str = Field(default="1Gi", validation_alias=_env("JOB_TMP_SIZE_LIMIT"))

    # -- job policy: what a DataSource may ask for beyond the defaults (see policy.py) ----------
    job_allowed_images: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="spec.image values allowed; an entry ending in * is a prefix. Empty = none.",
        validation_alias=_env("JOB_ALLOWED_IMAGES", "job_allowed_images"),
    )
    job_allowed_nfs_servers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="NFS servers a local source may mount. Empty = no nfs volumes.",
        validation_alias=_env("JOB_ALLOWED_NFS_SERVERS", "job_allowed_nfs_servers"),
    )
    job_max_cpu: str = Field(default="1", validation_alias=_env("JOB_MAX_CPU", "job_max_cpu"))
    job_max_memory: str = Field(
        default="1Gi", validation_alias=_env("JOB_MAX_MEMORY", "job_max_memory")
    )
    job_credentials_label: str = Field(
        default="ragkeeper.dev/credentials",
        min_length=1,
        max_length=316,
        pattern=_LABEL_KEY,
        description='Label a Secret needs (value "true") to be a DataSource\'s credentials.',
        validation_alias=_env("JOB_CREDENTIALS_LABEL", "job_credentials_label"),
    )

    # OCR of images and scanned PDF pages in the jobs (RAG_OCR_ENABLED, RAG_OCR_MAX_PIXELS).
    job_ocr_enabled: bool = Field(default=True, validation_alias=_env("JOB_OCR_ENABLED"))
    job_ocr_max_pixels: int = Field(
        default=40_000_000, gt=0, validation_alias=_env("JOB_OCR_MAX_PIXELS")
    )

    # Captions of images from a vision model in the jobs (RAG_IMAGE_CAPTIONS, RAG_CAPTION_*;
    # docs/ocr.md "Captions"). The API key reaches the jobs as a secretKeyRef to a Secret in
    # each DataSource's namespace; the operator never reads it.
    job_image_captions: bool = Field(default=False, validation_alias=_env("JOB_IMAGE_CAPTIONS"))
    job_caption_base_url: str | None = Field(
        default=None, validation_alias=_env("JOB_CAPTION_BASE_URL")
    )
    job_caption_model: str | None = Field(default=None, validation_alias=_env("JOB_CAPTION_MODEL"))
    job_caption_api_key_secret_name: str | None = Field(
        default=None, pattern=_DNS_LABEL, validation_alias=_env("JOB_CAPTION_API_KEY_SECRET_NAME")
    )
    job_caption_api_key_secret_key: str = Field(
        default="RAG_CAPTION_API_KEY",
        pattern=_SECRET_KEY,
        validation_alias=_env("JOB_CAPTION_API_KEY_SECRET_KEY"),
    )

    # -- the operator process ------------------------------------------------------------------
    watch_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias=_env("WATCH_NAMESPACES", "watch_namespaces")
    )
    peering_name: str | None = Field(
        default=None,
        description="kopf peering object name; unset means standalone (one replica).",
        validation_alias=_env("PEERING_NAME", "peering_name"),
    )
    peering_priority: int | None = Field(
        default=None,
        ge=0,
        description="kopf priority; the highest live one is active. Unset: random per process.",
        validation_alias=_env("PEERING_PRIORITY", "peering_priority"),
    )
    peering_lifetime_seconds: int = Field(
        default=60,
        ge=1,
        description="How long a silent peer counts as alive (kopf keep-alives come sooner).",
        validation_alias=_env("PEERING_LIFETIME_SECONDS", "peering_lifetime_seconds"),
    )
    metrics_port: int = Field(default=9090, ge=1, le=65535, validation_alias=_env("METRICS_PORT"))
    health_port: int = Field(default=8080, ge=1, le=65535, validation_alias=_env("HEALTH_PORT"))
    kubeconfig: str | None = Field(default=None, validation_alias=_env("KUBECONFIG", "kubeconfig"))
    log_format: str = Field(
        default="json", pattern="^(json|text)$", validation_alias=_env("LOG_FORMAT")
    )
    log_level: str = Field(default="INFO", validation_alias=_env("LOG_LEVEL"))

    # -- retries and waits -------------------------------------------------------------------
    retry_initial_delay_seconds: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("RETRY_INITIAL_DELAY_SECONDS", "retry_initial_delay"),
    )
    retry_max_delay_seconds: float = Field(
        default=300.0, gt=0, validation_alias=_env("RETRY_MAX_DELAY_SECONDS", "retry_max_delay")
    )
    purge_timeout_seconds: float = Field(
        default=900.0, gt=0, validation_alias=_env("PURGE_TIMEOUT_SECONDS", "purge_timeout")
    )
    purge_poll_seconds: float = Field(
        default=5.0, gt=0, validation_alias=_env("PURGE_POLL_SECONDS", "purge_poll")
    )
    # How long one read of a Secret or PVC serves every DataSource that depends on it
    # (lookups.py); 0 reads them for each DataSource.
    dependency_cache_seconds: float = Field(
        default=10.0, ge=0, validation_alias=_env("DEPENDENCY_CACHE_SECONDS")
    )
    watch_server_timeout_seconds: int = Field(
        default=300, ge=10, validation_alias=_env("WATCH_SERVER_TIMEOUT_SECONDS")
    )

    @field_validator(
        "watch_namespaces", "job_allowed_images", "job_allowed_nfs_servers", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> OperatorSettings:
        if self.retry_initial_delay_seconds > self.retry_max_delay_seconds:
            raise ValueError("RETRY_INITIAL_DELAY_SECONDS must not exceed RETRY_MAX_DELAY_SECONDS")
        return self

    @model_validator(mode="after")
    def _captions_need_a_model(self) -> OperatorSettings:
        if self.job_image_captions:
            missing = [
                name
                for name, value in (
                    ("JOB_CAPTION_BASE_URL", self.job_caption_base_url),
                    ("JOB_CAPTION_MODEL", self.job_caption_model),
                )
                if not (value and value.strip())
            ]
            if missing:
                raise ValueError(f"JOB_IMAGE_CAPTIONS=true needs {' and '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _quantities(self) -> OperatorSettings:
        """The job defaults and the caps must be positive quantities (policy.py compares them)."""
        for name, value in (
            ("JOB_CPU_REQUEST", self.job_cpu_request),
            ("JOB_CPU_LIMIT", self.job_cpu_limit),
            ("JOB_MEMORY_REQUEST", self.job_memory_request),
            ("JOB_MEMORY_LIMIT", self.job_memory_limit),
            ("JOB_MAX_CPU", self.job_max_cpu),
            ("JOB_MAX_MEMORY", self.job_max_memory),
        ):
            quantity = parse_quantity(value)
            if quantity is None or quantity <= 0:
                raise ValueError(f"{name} must be a positive quantity")
        return self

    @property
    def clusterwide(self) -> bool:
        """Empty ``WATCH_NAMESPACES`` means every namespace."""
        return not self.watch_namespaces

    def retry_delay(self, retry: int) -> float:
        """Exponential backoff for conditions that can heal (a Secret created later)."""
        delay: float = self.retry_initial_delay_seconds * (2 ** min(retry, 16))
        return min(self.retry_max_delay_seconds, delay)
