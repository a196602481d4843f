"""Matching: commands, callback patterns, message filters, order, include; conflicts."""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

import pytest
from router_fakes import FakeAPI, dispatch, message, press

from antiloop import Router
from antiloop.context import Context
from antiloop.outbox import Outbox
from antiloop.router import Pattern, RouteConflict
from antiloop.store.base import Store


def line_of(marker: str) -> int:
    """The line of this file holding ``marker`` (a comment next to a decorator)."""
    src, start = inspect.getsourcelines(inspect.getmodule(line_of))  # type: ignore[arg-type]
    return next(i for i, text in enumerate(src, start or 1) if marker in text and "line_of" not in text)


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], list[str]]] = []

    def handler(self, name: str) -> Any:
        async def h(ctx: Context, **fields: Any) -> None:
            self.calls.append((name, fields, list(ctx.args)))
        return h

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


async def test_command_matching(outbox: Outbox, store: Store) -> None:
    r, seen = Router(), Seen()
    r.command("start")(seen.handler("start"))
    r.command("simulate", "sim")(seen.handler("simulate"))
    for text in ["/start", "/start@menu_bot", "/START@Menu_Bot", "/simulate 1000 12",
                 "/sim 5", "/start@other_bot", "/starter", "start", "/help"]:
        await dispatch(r, message(text), outbox, store)
    assert seen.calls == [
        ("start", {}, []), ("start", {}, []), ("start", {}, []),
        ("simulate", {}, ["1000", "12"]), ("simulate", {}, ["5"]),
    ]


async def test_command_addressed_to_any_bot_when_username_unknown(outbox: Outbox, store: Store) -> None:
    r, seen = Router(), Seen()
    r.command("start")(seen.handler("start"))
    await dispatch(r, message("/start@other_bot"), outbox, store, username=None)
    assert seen.names == ["start"]


async def test_callback_template_and_regex_fields(outbox: Outbox, store: Store) -> None:
    r = Router(debounce=0)
    seen = Seen()
    r.callback("menu:{item}")(seen.handler("menu"))
    r.callback("page:{n:int}")(seen.handler("page"))
    r.callback("file:{path:rest}")(seen.handler("file"))
    r.callback(re.compile(r"buy:(?P<asset>[A-Z]+)x(?P<qty>\d+)"))(seen.handler("buy"))
    for data in ["menu:invest", "page:12", "page:-3", "file:a:b:c", "buy:SOLx3",
                 "menu:", "menu:a:b", "page:x", "buy:solx3", "other"]:
        await dispatch(r, press(data), outbox, store)
    assert seen.calls == [
        ("menu", {"item": "invest"}, []), ("page", {"n": 12}, []), ("page", {"n": -3}, []),
        ("file", {"path": "a:b:c"}, []), ("buy", {"asset": "SOL", "qty": "3"}, []),
    ]


async def test_message_filters(outbox: Outbox, store: Store) -> None:
    r, seen = Router(), Seen()
    r.message("hi")(seen.handler("exact"))
    r.message(regex=r"^amount (?P<n>\d+)$")(seen.handler("regex"))
    r.message(content_types="photo")(seen.handler("photo"))
    r.message(chat_types=["group", "supergroup"])(seen.handler("group"))
    r.message(where=lambda ctx: (ctx.text or "").endswith("?"))(seen.handler("question"))
    r.edited_message()(seen.handler("edited"))
    r.on("poll")(seen.handler("poll"))
    updates = [
        message("hi"), message("amount 42"), message(None, photo=[{"file_id": "p"}]),
        message("x", chat=-100, user=3), message("why?"), message("nothing"),
        message("hi", edited=True), {"update_id": 99_001, "poll": {"id": "p1"}},
    ]
    for u in updates:
        await dispatch(r, u, outbox, store)
    assert seen.calls == [
        ("exact", {}, []), ("regex", {"n": "42"}, []), ("photo", {}, []), ("group", {}, []),
        ("question", {}, []), ("edited", {}, []), ("poll", {}, []),
    ]


async def test_first_match_in_registration_order_across_include(outbox: Outbox, store: Store) -> None:
    root, mod, seen = Router("root"), Router("mod"), Seen()
    root.message("a")(seen.handler("root-a"))
    mod.message("a", chat_types="private")(seen.handler("mod-a"))
    mod.message("b")(seen.handler("mod-b"))
    root.include(mod)
    root.message(regex="b|c")(seen.handler("root-bc"))
    mod.message("c")(seen.handler("mod-c-late"))  # registered on mod after include: still mod's place
    for text in ["a", "b", "c"]:
        await dispatch(root, message(text), outbox, store)
    assert seen.names == ["root-a", "mod-b", "mod-c-late"]


async def test_unmatched_update_completes_and_is_logged(
    outbox: Outbox, store: Store, api: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    r = Router()

    @r.command("start")
    async def start(ctx: Context) -> None:
        raise AssertionError("must not run")

    with caplog.at_level(logging.DEBUG, logger="antiloop.router"):
        await dispatch(r, message("hello"), outbox, store)
        ctx = await dispatch(r, press("nothing:here"), outbox, store)
    assert "no handler matches" in caplog.text
    assert [m for m, _ in api.calls] == ["answerCallbackQuery"]
    assert api.calls[0][1] == {"callback_query_id": ctx.callback_query_id}


def test_same_command_twice_names_both_places() -> None:
    r = Router()

    @r.command("start")  # FIRST-START
    async def a(ctx: Context) -> None: ...

    with pytest.raises(RouteConflict) as err:
        @r.command("help", "START")  # SECOND-START
        async def b(ctx: Context) -> None: ...
    msg = str(err.value)
    assert f"test_router_routing.py:{line_of('# FIRST-START')}" in msg
    assert f"test_router_routing.py:{line_of('# SECOND-START')}" in msg
    assert "/start" in msg


@pytest.mark.parametrize(("first", "second", "example"), [
    ("menu:{item}", "menu:{x}", "both match menu:x."),
    ("menu:{item}", "menu:back", "menu:back"),
    ("menu:back", "menu:{item}", "menu:back"),
    ("{x}:invest", "menu:{a}", "menu:invest"),
    ("page:{n:int}", "page:{p}", "page:0"),
    ("file:{p:rest}", "file:a:{b}", "file:a:x"),
    ("same", "same", "same"),
    (re.compile(r"menu:\w+"), "menu:back", "menu:back"),
    ("menu:{item}", re.compile(r"menu:.*"), "menu:x"),
    (re.compile("a+"), re.compile("a+"), "same expression"),
])
def test_overlapping_callback_patterns_raise(first: Any, second: Any, example: str) -> None:
    r = Router()
    r.callback(first)(_noop)  # FIRST-CB
    with pytest.raises(RouteConflict) as err:
        r.callback(second)(_noop)  # SECOND-CB
    msg = str(err.value)
    assert example in msg
    assert f":{line_of('# FIRST-CB')}" in msg and f":{line_of('# SECOND-CB')}" in msg


@pytest.mark.parametrize(("first", "second"), [
    ("menu:{item}", "page:{n}"),
    ("menu:{item}", "menu:{item}:{sub}"),  # {item} never holds a colon
    ("page:{n:int}", "page:next"),
    ("menu", "menu:"),
    (re.compile(r"a\d"), re.compile(r"b\d")),
])
def test_distinct_callback_patterns_do_not_conflict(first: Any, second: Any) -> None:
    r = Router()
    r.callback(first)(_noop)
    r.callback(second)(_noop)
    assert len(r.routes()) == 2


def test_conflicts_across_include_and_same_filters() -> None:
    root, mod = Router(), Router()
    root.callback("menu:{item}")(_noop)
    mod.callback("menu:back")(_noop)
    with pytest.raises(RouteConflict):
        root.include(mod)
    other = Router()
    root.include(other)
    with pytest.raises(RouteConflict):
        other.callback("menu:{x}")(_noop)  # registered after include: checked against the tree
    root.message()(_noop)
    with pytest.raises(RouteConflict, match="same filters"):
        root.message()(_noop)
    root.message(from_bots=True)(_noop)  # bots only reach this one: not the same filters
    root.on("poll")(_noop)
    with pytest.raises(RouteConflict):
        root.on("poll")(_noop)


def test_bad_registrations_raise() -> None:
    r = Router()
    with pytest.raises(ValueError, match="command names"):
        r.command("no spaces")
    with pytest.raises(ValueError, match="unknown content type"):
        r.message(content_types="fotos")
    with pytest.raises(ValueError, match="unknown update type"):
        r.on("mesage")
    with pytest.raises(ValueError, match="field"):
        r.callback("menu:{item:float}")
    with pytest.raises(ValueError, match="takes no argument item"):
        @r.callback("menu:{item}")
        async def h(ctx: Context) -> None: ...
    with pytest.raises(Exception, match="already part of a router tree"):
        r.include(r)


def test_pattern_overlap_is_symmetric() -> None:
    pairs = [("a:{x}", "{y}:b"), ("x{n:int}", "x-{m}"), ("k:{a:rest}", "k:{b}")]
    for a, b in pairs:
        assert Pattern(a).overlap(Pattern(b)) is not None
        assert Pattern(b).overlap(Pattern(a)) is not None


async def _noop(ctx: Context, **fields: Any) -> None:
    return None


async def test_resolve_names_the_handler_without_running_it() -> None:
    from router_fakes import make_ctx

    from antiloop.store import MemoryStore

    router = Router()
    runs: list[str] = []

    @router.command("simulate")
    async def simulate(ctx: Context) -> None:
        runs.append("simulate")

    @router.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        runs.append(item)

    store = MemoryStore()
    outbox = Outbox(FakeAPI(), store, rate_limits=False)
    ctx = make_ctx(message("/simulate 1000"), outbox, store)
    found = router.resolve(ctx)
    assert found is not None and found[0] is simulate and found[1] == {}
    assert ctx.args == ["1000"]
    found = router.resolve(make_ctx(press("menu:invest"), outbox, store))
    assert found is not None and found[0] is menu and found[1] == {"item": "invest"}
    assert router.resolve(make_ctx(press("nothing"), outbox, store)) is None
    assert runs == []
