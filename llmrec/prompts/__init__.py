"""Prompt templates: Jinja files rendered in a sandbox into chat messages.

One template per augmentation (`edges.jinja`, `profiles.jinja`,
`attributes.jinja`) ships in this package; `--prompts-dir` points at a folder
whose `<name>.jinja` files replace them. A chat template defines two blocks,
`system` and `user`, which become the two chat messages. The edge scoring
templates (`edge_likelihood.jinja`, `edge_yesno.jinja`) are plain text for
`ScoreRequest`s instead: their blocks (`TEMPLATE_BLOCKS`) are the parts of a
scored text, read with `render_blocks`.

Templates are user input, so they run in Jinja's immutable sandbox with
`StrictUndefined`: attribute access to internals (`__class__`, `__globals__`)
and mutation of the context raise a `PromptError` instead of running code, and
a misspelt variable fails loudly instead of rendering as empty text. The
sha256 of a template's source is stored with every answer it produced, so an
edited prompt never silently mixes with answers to the old one.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from pathlib import Path
from typing import Any

from llmrec.artifacts import sha256_text
from llmrec.errors import ConfigError

MESSAGE_BLOCKS = ("system", "user")
#: Template name -> the blocks it must define: chat templates the two messages, scoring templates the
#: prompt and the text scored after it (`llmrec.augment.scoring`).
TEMPLATE_BLOCKS = {
    "edges": MESSAGE_BLOCKS,
    "profiles": MESSAGE_BLOCKS,
    "attributes": MESSAGE_BLOCKS,
    "edge_likelihood": ("prompt", "candidate"),
    "edge_yesno": ("prompt", "question"),
}
TEMPLATE_NAMES = tuple(TEMPLATE_BLOCKS)


class PromptError(ConfigError):
    """A prompt template is missing, malformed, or tried something the sandbox forbids."""


@functools.lru_cache(maxsize=1)
def _sandbox() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A loaded template: its name, where it came from, its source and that source's hash."""

    name: str
    origin: str
    source: str

    @property
    def template_hash(self) -> str:
        return sha256_text(self.source)

    @functools.cached_property
    def _compiled(self) -> Any:
        from jinja2 import TemplateSyntaxError

        try:
            template = _sandbox().from_string(self.source)
        except TemplateSyntaxError as exc:
            raise PromptError(f"{self.origin}:{exc.lineno}: template syntax error: {exc.message}") from None
        blocks = TEMPLATE_BLOCKS.get(self.name, MESSAGE_BLOCKS)
        absent = [block for block in blocks if block not in template.blocks]
        if absent:
            wanted = " and ".join(f"{{% block {block} %}}...{{% endblock %}}" for block in blocks)
            raise PromptError(f"{self.origin}: missing block(s) {absent}; a {self.name} template defines {wanted}")
        return template

    def render(self, **context: Any) -> tuple[dict[str, str], ...]:
        """Render the `system` and `user` blocks into chat messages (deterministic for equal context)."""
        blocks = self.render_blocks(**context)
        return tuple({"role": role, "content": blocks[role]} for role in MESSAGE_BLOCKS)

    def render_blocks(self, **context: Any) -> dict[str, str]:
        """Every block this template's name requires, rendered and stripped of surrounding whitespace."""
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError, UndefinedError

        template = self._compiled
        rendered = {}
        for block in TEMPLATE_BLOCKS.get(self.name, MESSAGE_BLOCKS):
            try:
                text = "".join(template.blocks[block](template.new_context(dict(context))))
            except SecurityError as exc:
                raise PromptError(f"{self.origin}: unsafe template operation refused by the sandbox ({exc})") from None
            except UndefinedError as exc:
                raise PromptError(f"{self.origin}: undefined template variable ({exc.message})") from None
            except TemplateError as exc:
                raise PromptError(f"{self.origin}: template failed to render ({exc})") from None
            except Exception as exc:  # noqa: BLE001 - a template is user code: range(10**9), include, endless recursion
                raise PromptError(f"{self.origin}: template failed to render ({type(exc).__name__}: {exc})") from None
            rendered[block] = text.strip()
        return rendered


def load_template(name: str, prompts_dir: Path | str | None = None) -> PromptTemplate:
    """The template `name`: `<prompts_dir>/<name>.jinja` when present, else the packaged one."""
    if name not in TEMPLATE_NAMES:
        raise PromptError(f"unknown prompt template '{name}'; expected one of {list(TEMPLATE_NAMES)}")
    filename = f"{name}.jinja"
    if prompts_dir is not None:
        folder = Path(prompts_dir)
        if not folder.is_dir():
            raise PromptError(f"{folder}: --prompts-dir is not a folder")
        override = folder / filename
        if override.is_file():
            try:
                return PromptTemplate(name, str(override), override.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise PromptError(f"{override}: template is not UTF-8 text") from None
    packaged = resources.files(__name__) / filename
    return PromptTemplate(name, f"llmrec/prompts/{filename}", packaged.read_text(encoding="utf-8"))
