"""Routing: one handler per update, the first that matches in registration order.

``await router(ctx)`` finds the handler, applies the human-side guards (callback debounce,
opt-in fingerprints, messages from bots ignored), runs it, and makes sure a callback query is
answered exactly once: by the handler, by a timer after ``answer_after`` seconds, or when the
handler returns or raises. See docs/ROUTER.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import updates as U
from .context import Context, press_key
from .errors import ConfigError

log = logging.getLogger("antiloop.router")

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)
Test = Callable[[Context, "_Probe"], "dict[str, Any] | None"]

DEFAULT_ANSWER_AFTER = 2.0
DEFAULT_DEBOUNCE = 1.0

CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})
CONTENT_TYPES = (  # the first one present names a message's content (venue before location...)
    "text", "animation", "audio", "document", "photo", "sticker", "story", "video", "video_note",
    "voice", "contact", "dice", "game", "poll", "venue", "location", "invoice",
    "successful_payment", "new_chat_members", "left_chat_member", "new_chat_title",
    "new_chat_photo", "delete_chat_photo", "group_chat_created", "supergroup_chat_created",
    "channel_chat_created", "migrate_to_chat_id", "migrate_from_chat_id", "pinned_message",
    "users_shared", "chat_shared", "web_app_data",
)
_COMMAND_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")


class RouteConflict(ConfigError):
    """Two handlers would match the same updates; the message names both places."""


def content_type(message: dict[str, Any] | None) -> str:
    if message:
        for kind in CONTENT_TYPES:
            if kind in message:
                return kind
    return "unknown"


# -- callback_data patterns ----------------------------------------------------------------
# A template compiles to atoms (char class, repeat) so that overlap between two templates can be
# decided exactly: a small search over the product of both (an NFA intersection).
_ANY, _NOT_COLON, _DIGIT = "<any>", "<not-colon>", "<digit>"
_ONE, _OPT, _STAR = 1, 2, 3
Atom = tuple[str, int]
_FIELDS: dict[str, tuple[str, list[Atom], str]] = {  # kind -> (regex, atoms, witness)
    "str": (r"[^:]+", [(_NOT_COLON, _ONE), (_NOT_COLON, _STAR)], "x"),
    "int": (r"-?[0-9]+", [("-", _OPT), (_DIGIT, _ONE), (_DIGIT, _STAR)], "0"),
    "rest": (r".+", [(_ANY, _ONE), (_ANY, _STAR)], "x"),
}
_FIELD_RE = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _accepts(cls: str, ch: str) -> bool:
    if cls == _ANY:
        return True
    if cls == _NOT_COLON:
        return ch != ":"
    if cls == _DIGIT:
        return ch in "0123456789"
    return cls == ch


def _common_char(a: str, b: str) -> str | None:
    """A character both classes accept, or None."""
    for cls, other in ((a, b), (b, a)):
        if len(cls) == 1:
            return cls if _accepts(other, cls) else None
    return "0" if _DIGIT in (a, b) else "x"


def _shared_string(a: list[Atom], b: list[Atom]) -> str | None:
    """A string both atom sequences match, or None when there is none."""
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[int, int, str]] = [(0, 0, "")]
    while stack:
        i, j, text = stack.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return text
        if i < len(a) and j < len(b):
            ch = _common_char(a[i][0], b[j][0])
            if ch is not None:
                ni = i if a[i][1] == _STAR else i + 1
                nj = j if b[j][1] == _STAR else j + 1
                stack.append((ni, nj, text + ch))
        # skipping optional parts is tried first (last pushed): the example found is short
        if i < len(a) and a[i][1] != _ONE:
            stack.append((i + 1, j, text))
        if j < len(b) and b[j][1] != _ONE:
            stack.append((i, j + 1, text))
    return None


class Pattern:
    """``"menu:{item}"`` (fields: ``{name}`` = one or more chars except ``:``, ``{name:int}``,
    ``{name:rest}`` = anything) or a compiled regex (named groups). Both must match the whole
    ``callback_data``; the fields become keyword arguments of the handler."""

    def __init__(self, source: str | re.Pattern[str]) -> None:
        self.source = source
        self.atoms: list[Atom] | None = None
        self.ints: set[str] = set()
        self.witness = ""
        if isinstance(source, re.Pattern):
            self.regex = source
            self.fields = list(source.groupindex)
            return
        regex, self.atoms, self.fields = self._compile(source)
        self.regex = re.compile(regex, re.DOTALL)

    def _compile(self, template: str) -> tuple[str, list[Atom], list[str]]:
        regex, atoms, fields, pos = "", [], [], 0
        for m in [*_FIELD_RE.finditer(template), None]:
            literal = template[pos:m.start() if m else len(template)]
            if "{" in literal or "}" in literal:
                raise ValueError(f"callback pattern {template!r}: a field is written {{name}}, "
                                 "{name:int} or {name:rest}")
            regex += re.escape(literal)
            atoms += [(ch, _ONE) for ch in literal]
            self.witness += literal
            if m is None:
                break
            name, kind = m.group(1), m.group(2) or "str"
            if kind not in _FIELDS or name in fields:
                raise ValueError(f"callback pattern {template!r}: field {{{m.group(0)[1:-1]}}} "
                                 "is repeated or of an unknown kind (use str, int or rest)")
            part, part_atoms, sample = _FIELDS[kind]
            regex += f"(?P<{name}>{part})"
            atoms += part_atoms
            self.witness += sample
            fields.append(name)
            if kind == "int":
                self.ints.add(name)
            pos = m.end()
        return regex, atoms, fields

    def __str__(self) -> str:
        if isinstance(self.source, re.Pattern):
            return f"re.compile({self.source.pattern!r})"
        return repr(self.source)

    def match(self, data: str) -> dict[str, Any] | None:
        m = self.regex.fullmatch(data)
        if m is None:
            return None
        found: dict[str, Any] = {k: v for k, v in m.groupdict().items() if v is not None}
        for name in self.ints & found.keys():
            found[name] = int(found[name])
        return found

    def overlap(self, other: Pattern) -> str | None:
        """A callback_data both patterns match (proof of a conflict), or None if none is known.

        Exact for two templates; a template against a regex is tested on a sample of the
        template; two regexes conflict when they are the same expression.
        """
        if self.atoms is not None and other.atoms is not None:
            return _shared_string(self.atoms, other.atoms)
        for a, b in ((self, other), (other, self)):
            if a.atoms is not None and b.regex.fullmatch(a.witness):
                return a.witness
        same = (self.regex.pattern == other.regex.pattern
                and self.regex.flags == other.regex.flags)
        return "(the same expression)" if same else None


# -- routes ----------------------------------------------------------------------------------
@dataclass
class _Probe:
    """What every route of one update asks, computed once."""

    command: str | None = None
    args: tuple[str, ...] = ()

    @classmethod
    def of(cls, ctx: Context) -> _Probe:
        text = ctx.text
        if ctx.update_type != "message" or not text or text[0] != "/":
            return cls()
        head, *args = text.split()
        name, _, target = head[1:].partition("@")
        if target and ctx.bot_username and target.casefold() != ctx.bot_username.lstrip("@").casefold():
            return cls()  # addressed to another bot
        return cls(name.casefold(), tuple(args))


@dataclass(eq=False)
class Route:
    update_type: str
    handler: Handler
    router: Router
    where: str
    label: str
    test: Test
    signature: tuple[Any, ...] | None = None
    """Two routes with the same non-None signature conflict."""
    commands: frozenset[str] = frozenset()
    pattern: Pattern | None = None
    from_bots: bool = True
    dedupe: float = 0.0
    debounce: float | None = None
    answer_after: float | None = None

    def conflict(self, other: Route) -> str | None:
        """Why ``self`` and ``other`` would take the same updates, or None."""
        if self.update_type != other.update_type:
            return None
        shared = self.commands & other.commands
        if shared:
            return f"both handle /{min(shared)}"
        if self.pattern is not None and other.pattern is not None:
            example = self.pattern.overlap(other.pattern)
            return None if example is None else f"both match {example}"
        if self.signature is not None and self.signature == other.signature:
            return "they have the same filters"
        return None


@dataclass(frozen=True)
class MessageFilter:
    """The filters of a message handler; all given ones must hold."""

    text: frozenset[str] | None = None
    regex: re.Pattern[str] | None = None
    content_types: frozenset[str] | None = None
    chat_types: frozenset[str] | None = None
    where: Callable[[Context], bool] | None = None

    def check(self, ctx: Context, probe: _Probe) -> dict[str, Any] | None:
        if self.text is not None and ctx.text not in self.text:
            return None
        if self.chat_types is not None and _chat_type(ctx) not in self.chat_types:
            return None
        if self.content_types is not None and content_type(ctx.message) not in self.content_types:
            return None
        found: dict[str, Any] = {}
        if self.regex is not None:
            m = self.regex.search(ctx.text or "")
            if m is None:
                return None
            found = {k: v for k, v in m.groupdict().items() if v is not None}
        if self.where is not None and not self.where(ctx):
            return None
        return found

    def signature(self) -> tuple[Any, ...] | None:
        if self.where is not None:
            return None  # a custom predicate: cannot tell
        regex = (self.regex.pattern, self.regex.flags) if self.regex else None
        return (self.text, regex, self.content_types, self.chat_types)


def _chat_type(ctx: Context) -> str | None:
    chat = ctx.message.get("chat") if ctx.message else None
    kind = chat.get("type") if isinstance(chat, dict) else None
    return kind if isinstance(kind, str) else None


def _names(value: str | Iterable[str] | None, allowed: Iterable[str], what: str) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset([value] if isinstance(value, str) else value)
    unknown = names - set(allowed)
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {', '.join(sorted(allowed))}")
    return names


def _caller() -> str:
    """file:line of the code that called the public method that called this."""
    frame = inspect.currentframe()
    outer = frame.f_back.f_back if frame and frame.f_back else None
    if outer is None:
        return "<unknown>"
    path = outer.f_code.co_filename
    try:
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    except ValueError:
        pass
    return f"{path}:{outer.f_lineno}"


def _check_kwargs(handler: Handler, fields: Iterable[str], label: str) -> None:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [f for f in fields if f not in names]
    if missing:
        raise ValueError(f"handler {getattr(handler, '__qualname__', handler)!r} for {label} "
                         f"takes no argument {', '.join(missing)}; add it or **fields")


# -- the router ------------------------------------------------------------------------------
class Router:
    """Handlers for a bot (or one module of it). ``include`` others to build a tree.

    ``answer_after`` (seconds, default 2.0) and ``debounce`` (seconds, default 1.0; 0 disables)
    apply to this router's callback handlers unless a handler overrides them; ``None`` means
    the parent router's value.
    """

    def __init__(
        self, name: str | None = None, *, answer_after: float | None = None,
        debounce: float | None = None,
    ) -> None:
        self.name = name or "router"
        self.answer_after = answer_after
        self.debounce = debounce
        self.parent: Router | None = None
        self._entries: list[Route | Router] = []
        self._flat: dict[str, list[Route]] = {}

    def __repr__(self) -> str:
        return f"Router({self.name!r}, {len(self.routes())} handlers)"

    # -- registration ------------------------------------------------------------------------
    def command(
        self, *names: str, chat_types: str | Iterable[str] | None = None, from_bots: bool = False,
        dedupe: float = 0.0,
    ) -> Callable[[H], H]:
        """``/name`` and ``/name@ourbot`` in a message; the words after it are ``ctx.args``."""
        where = _caller()
        clean = frozenset(n.lstrip("/").casefold() for n in names)
        if not clean or any(not _COMMAND_RE.match(n) for n in clean):
            raise ValueError(f"command names are 1-32 letters, digits or _: {names!r}")
        filt = MessageFilter(chat_types=_names(chat_types, CHAT_TYPES, "chat type"))
        label = "command " + ", ".join(f"/{n}" for n in sorted(clean))

        def test(ctx: Context, probe: _Probe) -> dict[str, Any] | None:
            return filt.check(ctx, probe) if probe.command in clean else None

        return self._decorator(lambda h: Route(
            "message", h, self, where, label, test, commands=clean, from_bots=from_bots,
            dedupe=dedupe))

    def callback(
        self, pattern: str | re.Pattern[str], *, debounce: float | None = None,
        answer_after: float | None = None,
    ) -> Callable[[H], H]:
        """A callback query whose ``data`` matches ``pattern`` (see :class:`Pattern`)."""
        where = _caller()
        pat = Pattern(pattern)
        label = f"callback {pat}"

        def test(ctx: Context, probe: _Probe) -> dict[str, Any] | None:
            return pat.match(ctx.data) if ctx.data is not None else None

        def make(h: Handler) -> Route:
            _check_kwargs(h, pat.fields, label)
            return Route("callback_query", h, self, where, label, test, pattern=pat,
                         debounce=debounce, answer_after=answer_after)

        return self._decorator(make)

    def message(
        self, text: str | Iterable[str] | None = None, *, regex: str | re.Pattern[str] | None = None,
        content_types: str | Iterable[str] | None = None,
        chat_types: str | Iterable[str] | None = None, from_bots: bool = False,
        dedupe: float = 0.0, where: Callable[[Context], bool] | None = None,
    ) -> Callable[[H], H]:
        """A new message: exact ``text`` (one of), ``regex`` (searched; named groups are
        keyword arguments), content and chat types, a ``where(ctx)`` predicate."""
        return self._message_like("message", _caller(), text, regex, content_types, chat_types,
                                  from_bots, dedupe, where)

    def edited_message(
        self, text: str | Iterable[str] | None = None, *, regex: str | re.Pattern[str] | None = None,
        content_types: str | Iterable[str] | None = None,
        chat_types: str | Iterable[str] | None = None, from_bots: bool = False,
        dedupe: float = 0.0, where: Callable[[Context], bool] | None = None,
    ) -> Callable[[H], H]:
        """An edited message, with the same filters as :meth:`message`."""
        return self._message_like("edited_message", _caller(), text, regex, content_types,
                                  chat_types, from_bots, dedupe, where)

    def on(
        self, update_type: str, *, where: Callable[[Context], bool] | None = None
    ) -> Callable[[H], H]:
        """Any update of ``update_type`` (``"poll"``, ``"my_chat_member"``, ...), unfiltered."""
        at = _caller()
        if update_type not in U.UPDATE_TYPES:
            raise ValueError(f"unknown update type {update_type!r}; known: {', '.join(U.UPDATE_TYPES)}")

        def test(ctx: Context, probe: _Probe) -> dict[str, Any] | None:
            return {} if where is None or where(ctx) else None

        signature = None if where is not None else ("on",)
        return self._decorator(lambda h: Route(
            update_type, h, self, at, f"on {update_type!r}", test, signature=signature))

    def include(self, *routers: Router) -> Router:
        """Add other routers' handlers here, after the ones registered so far."""
        for other in routers:
            if other.parent is not None or other is self or other in self._ancestors():
                raise ConfigError(f"{other!r} is already part of a router tree")
            for route in other.routes():
                self._check(route)
            other.parent = self
            self._entries.append(other)
            self._invalidate()
        return self

    def routes(self) -> list[Route]:
        """Every route of this tree, in matching order."""
        out: list[Route] = []
        for entry in self._entries:
            out.extend(entry.routes() if isinstance(entry, Router) else [entry])
        return out

    def _message_like(
        self, kind: str, where_at: str, text: str | Iterable[str] | None,
        regex: str | re.Pattern[str] | None, content_types: str | Iterable[str] | None,
        chat_types: str | Iterable[str] | None, from_bots: bool, dedupe: float,
        where: Callable[[Context], bool] | None,
    ) -> Callable[[H], H]:
        texts = None if text is None else frozenset([text] if isinstance(text, str) else text)
        compiled = re.compile(regex) if isinstance(regex, str) else regex
        filt = MessageFilter(texts, compiled, _names(content_types, CONTENT_TYPES, "content type"),
                             _names(chat_types, CHAT_TYPES, "chat type"), where)
        parts = [f"text={sorted(texts)}" if texts else "", f"regex={compiled.pattern!r}" if compiled else ""]
        label = f"{kind}({', '.join(p for p in parts if p)})"

        def make(h: Handler) -> Route:
            if compiled is not None:
                _check_kwargs(h, compiled.groupindex, label)
            sig = filt.signature()
            return Route(kind, h, self, where_at, label, filt.check,
                         signature=None if sig is None else (*sig, from_bots),
                         from_bots=from_bots, dedupe=dedupe)

        return self._decorator(make)

    def _decorator(self, make: Callable[[Handler], Route]) -> Callable[[H], H]:
        def register(handler: H) -> H:
            route = make(handler)
            self._check(route)
            self._entries.append(route)
            self._invalidate()
            return handler
        return register

    def _ancestors(self) -> list[Router]:
        out, node = [], self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    def _root(self) -> Router:
        return ([self, *self._ancestors()])[-1]

    def _check(self, route: Route) -> None:
        for old in self._root().routes():
            why = route.conflict(old)
            if why:
                raise RouteConflict(
                    f"{route.label} at {route.where} conflicts with {old.label} at {old.where}: "
                    f"{why}. Only the first would ever run; merge them or make them distinct.")

    def _invalidate(self) -> None:
        for node in (self, *self._ancestors()):
            node._flat.clear()

    def _option(self, route: Route, name: str, default: float) -> float:
        value: float | None = getattr(route, name)
        node: Router | None = route.router
        while value is None and node is not None:
            value, node = getattr(node, name), node.parent
        return default if value is None else value

    # -- dispatch ----------------------------------------------------------------------------
    async def __call__(self, ctx: Context) -> None:
        """Run the first matching handler for ``ctx`` (or none), with every guard."""
        route, fields, from_bot = self._find(ctx)
        if route is None:
            if from_bot:
                await ctx.store.count_suppressed(ctx.bot_id, "from_bot")
                log.debug("update %s: a message from a bot; not handled", ctx.update_id)
            else:
                log.debug("update %s (%s): no handler matches; completed",
                          ctx.update_id, ctx.update_type)
            if ctx.is_callback and not ctx.answered:
                await ctx.answer()
            return
        window = self._window(route, ctx) if ctx.attempt == 1 else None
        if window is not None:
            key, seconds, reason = window
            if await ctx.store.hit_window(ctx.bot_id, key, seconds):
                await ctx.store.count_suppressed(ctx.bot_id, reason)
                log.debug("update %s: %s (%s within %.1f s)", ctx.update_id, reason, key, seconds)
                if ctx.is_callback and not ctx.answered:
                    await _best_effort(ctx.answer())
                return
        ctx.match = fields
        if ctx.is_callback:
            await self._run_callback(route, ctx, fields)
        else:
            await route.handler(ctx, **fields)

    def resolve(self, ctx: Context) -> tuple[Handler, dict[str, Any]] | None:
        """The handler that would run for this update and its keyword arguments, without any
        of the guards (debounce, fingerprints, answering): for tests and tools. Sets
        ``ctx.args`` for commands like a real dispatch."""
        route, fields, _ = self._find(ctx)
        return (route.handler, fields) if route is not None else None

    def _find(self, ctx: Context) -> tuple[Route | None, dict[str, Any], bool]:
        routes = self._flat.get(ctx.update_type)
        if routes is None:
            routes = self._flat[ctx.update_type] = [
                r for r in self.routes() if r.update_type == ctx.update_type]
        probe = _Probe.of(ctx)
        from_bot = ctx.from_bot
        skipped_bot = False
        for route in routes:
            if from_bot and not route.from_bots:
                skipped_bot = True
                continue
            fields = route.test(ctx, probe)
            if fields is not None:
                if route.commands:
                    ctx.args = list(probe.args)
                return route, fields, False
        return None, {}, skipped_bot

    def _window(self, route: Route, ctx: Context) -> tuple[str, float, str] | None:
        """The (key, seconds, reason) window this update must pass, if any."""
        if ctx.is_callback:
            seconds = self._option(route, "debounce", DEFAULT_DEBOUNCE)
            return (press_key(ctx), seconds, "debounced") if seconds > 0 else None
        if route.dedupe > 0 and ctx.text:
            norm = " ".join(ctx.text.casefold().split())
            digest = hashlib.blake2b(norm.encode(), digest_size=12).hexdigest()
            key = f"fp:{ctx.update_type}:{ctx.chat_id}:{ctx.user_id}:{digest}"
            return key, route.dedupe, "fingerprint"
        return None

    async def _run_callback(self, route: Route, ctx: Context, fields: dict[str, Any]) -> None:
        delay = self._option(route, "answer_after", DEFAULT_ANSWER_AFTER)
        if delay <= 0 and not ctx.answered:
            await ctx.answer()
        timer = _AutoAnswer(ctx, delay) if not ctx.answered else None
        try:
            await route.handler(ctx, **fields)
        except BaseException:
            if timer is not None:
                await timer.stop()
            if not ctx.answered:  # answered before the retry; the retry will not answer again
                await _best_effort(ctx.answer())
            raise
        if timer is not None:
            await timer.stop()
        if not ctx.answered:
            await ctx.answer()


class _AutoAnswer:
    """Answers ``ctx`` with no text after ``delay`` seconds unless it has been answered."""

    def __init__(self, ctx: Context, delay: float) -> None:
        self.ctx = ctx
        self.firing = False
        self.task = asyncio.create_task(self._run(delay))

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.ctx.answered:
            self.firing = True
            log.debug("update %s: handler still running after %.1f s; answering the callback",
                      self.ctx.update_id, delay)
            await self.ctx.answer()

    async def stop(self) -> None:
        if not self.firing:
            self.task.cancel()
        await asyncio.wait([self.task])
        if not self.task.cancelled() and self.task.exception() is not None:
            log.warning("update %s: the timed callback answer failed: %r",
                        self.ctx.update_id, self.task.exception())


async def _best_effort(step: Awaitable[Any]) -> None:
    try:
        await step
    except Exception:
        log.exception("a best-effort step failed")
