"""Drive a running modelrelay gateway with the official `anthropic` Python SDK.

Usage: anthropic_checks.py BASE_URL KEYS_JSON CHECK [CHECK ...]

BASE_URL is the gateway root (``http://127.0.0.1:PORT``; the SDK appends ``/v1/messages``, and
``/anthropic`` is put before it where a check says so). KEYS_JSON is a JSON object of API keys:
``main`` (a trial key with budget), ``tiny`` (a key whose budget cannot pay for a request) and
``rate`` (a key of a 2-RPM plan, unused so far); a check uses only the keys it names. Each CHECK
names one of the functions in CHECKS below.

Prints one JSON object ``{check: result}`` on stdout and exits 0, whatever the checks found: the
Rust test (tests/python_anthropic.rs) asserts on the values. A check that raises something it did
not expect reports ``{"unexpected": "..."}`` instead of its result.
"""

import json
import sys
import traceback

import anthropic

# Sent as they are: the gateway maps claude-opus* to deepseek-v4-pro and other claude* to flash.
SONNET = "claude-sonnet-4-5"
HAIKU = "claude-3-5-haiku"
OPUS = "claude-opus-4-1"


def client(base, key, **kw):
    """A client with the SDK's `api_key=`, with no retries unless asked: every status the
    gateway sends must reach the check as it was sent. (This SDK version sends `api_key` as
    `Authorization: Bearer`, not as `x-api-key`.)"""
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=base, api_key=key, timeout=60, **kw)


def x_api_key_client(base, key):
    """A client sending `key` in `x-api-key`, as Anthropic's API and older SDKs do; the SDK
    accepts that header in place of a credential."""
    return anthropic.Anthropic(
        base_url=base, default_headers={"x-api-key": key}, max_retries=0, timeout=60
    )


def bearer_client(base, key):
    """A client sending `key` as `Authorization: Bearer` (the SDK's `auth_token=`)."""
    return anthropic.Anthropic(base_url=base, auth_token=key, max_retries=0, timeout=60)


def msg(text):
    return [{"role": "user", "content": text}]


def sent_auth(request):
    """Which credential headers the SDK put on `request` (an httpx request)."""
    h = request.headers
    return {
        "x-api-key": "x-api-key" in h,
        "authorization": (h.get("authorization") or "").split(" ")[0] or None,
        "anthropic-version": h.get("anthropic-version"),
        "anthropic-beta": h.get("anthropic-beta"),
        "path": request.url.raw_path.decode(),
    }


def usage_of(u):
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
    }


def blocks_of(content):
    out = []
    for b in content:
        d = {"type": b.type}
        if b.type == "text":
            d["text"] = b.text
        elif b.type == "thinking":
            d["thinking"] = b.thinking
            d["has_signature"] = bool(b.signature)
        out.append(d)
    return out


def describe(e):
    """What a caller of the SDK can see of an exception."""
    body = getattr(e, "body", None)
    out = {
        "class": type(e).__name__,
        "is_status_error": isinstance(e, anthropic.APIStatusError),
        "is_internal_server_error": isinstance(e, anthropic.InternalServerError),
        "status": getattr(e, "status_code", None),
        "type": getattr(e, "type", None),
        "api_message": getattr(e, "api_message", None),
        "sdk_request_id": getattr(e, "request_id", None),
        "body": body if isinstance(body, (dict, list, str)) else None,
    }
    response = getattr(e, "response", None)
    if response is not None:
        out["headers"] = {
            name: response.headers.get(name)
            for name in (
                "x-request-id",
                "retry-after",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "content-type",
            )
        }
        # Which attempt the SDK gave up on: 0 when it never retried.
        out["retry_count"] = response.request.headers.get("x-stainless-retry-count")
    return out


def expect_error(fn):
    """Run fn, which should raise an SDK error; describe what happened."""
    try:
        result = fn()
    except anthropic.AnthropicError as e:
        return describe(e)
    return {"class": None, "returned": repr(result)[:500]}


def check_message(base, keys):
    """Non-stream, key in `x-api-key`, at the root (`/v1/messages`)."""
    c = x_api_key_client(base, keys["main"])
    raw = c.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=200,
        messages=msg("Say hi. [[sim prompt=1000 hit=640 reply=5]]"),
    )
    m = raw.parse()
    return {
        "request_id": raw.headers.get("x-request-id"),
        "sdk_request_id": m._request_id,
        "sent": sent_auth(raw.http_request),
        "id": m.id,
        "type": m.type,
        "role": m.role,
        "model": m.model,
        "content": blocks_of(m.content),
        "stop_reason": m.stop_reason,
        "usage": usage_of(m.usage),
    }


def check_stream(base, keys):
    """`messages.stream(...)` with the key as Bearer, under `/anthropic`, with thinking."""
    c = bearer_client(f"{base}/anthropic", keys["main"])
    events = []
    text = []
    with c.messages.stream(
        model=HAIKU,
        max_tokens=100,
        messages=msg("Stream please. [[sim prompt=40 hit=0 reply=6 reasoning=2]]"),
    ) as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "text":
                text.append(event.text)
        final = stream.get_final_message()
        response = stream.response
    return {
        "request_id": response.headers.get("x-request-id"),
        "content_type": response.headers.get("content-type"),
        "sent": sent_auth(response.request),
        "events": events,
        "text": "".join(text),
        "model": final.model,
        "content": blocks_of(final.content),
        "stop_reason": final.stop_reason,
        "usage": usage_of(final.usage),
    }


def check_stream_create(base, keys):
    """`beta.messages.create(stream=True)` with Bearer: `?beta=true` and an `anthropic-beta`
    header, as Claude Code sends them; the raw events, in order."""
    c = bearer_client(base, keys["main"])
    raw = c.beta.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=50,
        messages=msg("Raw events. [[sim prompt=20 hit=0 reply=3]]"),
        stream=True,
        betas=["interleaved-thinking-2025-05-14"],
    )
    events = []
    text = []
    usage = None
    for event in raw.parse():
        events.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text.append(event.delta.text)
        if event.type == "message_delta":
            usage = {"output_tokens": event.usage.output_tokens}
    return {
        "request_id": raw.headers.get("x-request-id"),
        "sent": sent_auth(raw.http_request),
        "events": events,
        "text": "".join(text),
        "message_delta_usage": usage,
    }


def check_count_tokens(base, keys):
    c = client(base, keys["main"])
    counted = c.messages.count_tokens(
        model="claude-sonnet-4", system="be brief", messages=msg("x" * 400)
    )
    return {"input_tokens": counted.input_tokens}


def check_errors(base, keys):
    """One request per error status the gateway can answer with, no retries."""
    main = client(base, keys["main"])

    def send(c, text, model=SONNET, max_tokens=10):
        return lambda: c.messages.create(model=model, max_tokens=max_tokens, messages=msg(text))

    return {
        "bad_request": expect_error(
            lambda: main.messages.create(model=SONNET, max_tokens=10, messages=[])
        ),
        "bad_key": expect_error(send(client(base, "sk-gateway-" + "Zz9" * 14), "hi")),
        "no_budget": expect_error(send(client(base, keys["tiny"]), "hi [[sim reply=5]]")),
        "not_allowed": expect_error(send(main, "hi", model=OPUS)),
        "unknown_model": expect_error(send(main, "hi", model="gpt-5")),
        # The same pooled client on: the gateway closes the connection after a 413 (the body
        # was not read) and says so (`Connection: close`), so the next request opens another.
        "too_large": expect_error(send(main, "x" * 100_000)),
        "upstream_failed": expect_error(send(main, "hi [[sim fail=500]]")),
        # No blank line before the idle timeout (1 s): they would reset it, and the first, at
        # 1 s, raced it.
        "upstream_timeout": expect_error(
            send(main, "hi [[sim first_delay_ms=3000 keepalive_ms=5000 reply=2]]")
        ),
        "upstream_rejected": expect_error(send(main, "hi [[sim fail=400]]")),
    }


def check_rate_limit(base, keys):
    c = client(base, keys["rate"])
    ok = []
    for _ in range(2):
        r = c.messages.create(model=SONNET, max_tokens=10, messages=msg("[[sim reply=1]]"))
        ok.append(r.content[0].text)
    third = expect_error(
        lambda: c.messages.create(model=SONNET, max_tokens=10, messages=msg("[[sim reply=1]]"))
    )
    return {"first_two": ok, "third": third}


def check_retries(base, keys):
    """The SDK's default retries (2): a 402 is sent once, a 502 three times."""
    broke = client(base, keys["tiny"], max_retries=anthropic.DEFAULT_MAX_RETRIES)
    main = client(base, keys["main"], max_retries=anthropic.DEFAULT_MAX_RETRIES)
    return {
        "sdk_max_retries": [broke.max_retries, main.max_retries],
        "no_budget": expect_error(
            lambda: broke.messages.create(model=SONNET, max_tokens=10, messages=msg("hi"))
        ),
        "upstream_failed": expect_error(
            lambda: main.messages.create(
                model=SONNET, max_tokens=10, messages=msg("retried [[sim fail=500]]")
            )
        ),
    }


def check_overloaded(base, keys):
    """A request the daemon cuts when it shuts down (the Rust side stops it meanwhile)."""
    c = client(base, keys["main"])
    return expect_error(
        lambda: c.messages.create(
            model=SONNET, max_tokens=10, messages=msg("wait [[sim first_delay_ms=30000 reply=1]]")
        )
    )


def check_docs_snippet(base, keys):
    """The /docs page's Anthropic Python example, run as written (its key and base URL filled
    in, its question given the simulator's markers) on an answer that thinks first: what it
    printed. It read ``content[0].text``, a ThinkingBlock's, and raised AttributeError."""
    import contextlib
    import html
    import io
    import re
    import urllib.request

    page = urllib.request.urlopen(base + "/docs").read().decode()
    found = re.search(r'id="anthropic-python"><code>(.*?)</code>', page, re.S)
    code = html.unescape(found.group(1)).replace("sk-gateway-…", keys["main"])
    code = re.sub(r'base_url="[^"]*"', f'base_url="{base}/anthropic"', code)
    code = re.sub(r'"content": "[^"]*"', '"content": "[[sim reasoning=5 reply=3]] hi"', code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    return out.getvalue().splitlines()


CHECKS = {
    "message": check_message,
    "stream": check_stream,
    "stream_create": check_stream_create,
    "count_tokens": check_count_tokens,
    "errors": check_errors,
    "rate_limit": check_rate_limit,
    "retries": check_retries,
    "overloaded": check_overloaded,
    "docs_snippet": check_docs_snippet,
}


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    base, keys = argv[1].rstrip("/"), json.loads(argv[2])
    results = {"anthropic_version": anthropic.__version__}
    for name in argv[3:]:
        fn = CHECKS.get(name)
        if fn is None:
            results[name] = {"unexpected": f"no check named {name!r}"}
            continue
        try:
            results[name] = fn(base, keys)
        except Exception as e:  # reported, so the Rust side shows it
            results[name] = {
                "unexpected": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
    json.dump(results, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
