"""Chooses the language model from ``LLM_PROVIDER``/``LLM_BASE_URL``/``LLM_API_KEY``/``LLM_CHOICE``.

Every supported provider speaks the OpenAI Chat Completions API (OpenAI, OpenRouter,
Ollama, vLLM, LiteLLM, ...), so one code path serves them all; the provider name
only supplies a default base URL. With nothing configured the offline extractive
model answers instead, so a fresh checkout runs without keys.
"""

from __future__ import annotations

from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from ragkeeper_knowledge.errors import ConfigurationError

from .extractive import extractive_model
from .settings import Settings

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}
KEY_REQUIRED = frozenset({"openai", "openrouter"})
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "openrouter": "openai/gpt-4o-mini"}


def build_model(settings: Settings) -> Model:
    """The configured OpenAI-compatible model, or the offline extractive one."""
    if not settings.llm_configured:
        return extractive_model()
    provider = settings.llm_provider.lower() or "openai"
    base_url = settings.llm_base_url or DEFAULT_BASE_URLS.get(provider)
    if not base_url:
        raise ConfigurationError(f"LLM_PROVIDER={provider!r} needs LLM_BASE_URL")
    model_name = settings.llm_choice or DEFAULT_MODELS.get(provider)
    if not model_name:
        raise ConfigurationError(f"LLM_PROVIDER={provider!r} needs LLM_CHOICE (the model name)")
    api_key = settings.llm_api_key.get_secret_value()
    if not api_key and provider in KEY_REQUIRED:
        raise ConfigurationError(f"LLM_PROVIDER={provider!r} needs LLM_API_KEY")
    # Local servers (Ollama, vLLM) accept any key; the OpenAI SDK insists on a non-empty one.
    api_key = api_key or "not-needed"
    return OpenAIChatModel(
        model_name,
        provider=OpenAIProvider(base_url=base_url, api_key=api_key),
        settings=ModelSettings(timeout=settings.llm_timeout_seconds),
    )


def describe(model: Model) -> str:
    return model.model_name
