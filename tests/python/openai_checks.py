"""Drive a running modelrelay gateway with the official `openai` Python SDK.

Usage: openai_checks.py BASE_URL KEYS_JSON CHECK [CHECK ...]

BASE_URL is the gateway root (``http://127.0.0.1:PORT``; ``/v1`` is appended). KEYS_JSON is a
JSON object of API keys: ``main`` (a trial key with budget), ``tiny`` (a key whose budget cannot
pay for a request), ``rate`` (a key of a 2-RPM plan, unused so far) and ``tiny_slow`` (a key
of that plan with a budget too small for any request). Each CHECK names one of
the functions in CHECKS below.

Prints one JSON object ``{check: result}`` on stdout and exits 0, whatever the checks found: the
Rust test (tests/python_client.rs) asserts on the values. A check that raises something it did
not expect reports ``{"unexpected": "..."}`` instead of its result.
"""

import json
import sys
import traceback

import openai

FLASH = "deepseek-v4-flash"


def client(base, key):
    # No retries: every status the gateway sends must reach the check as it was sent.
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def describe(e):
    """What a caller of the SDK can see of an exception."""
    out = {
        "class": type(e).__name__,
        "is_api_error": isinstance(e, openai.APIError),
        "is_status_error": isinstance(e, openai.APIStatusError),
        "is_rate_limit_error": isinstance(e, openai.RateLimitError),
        "status": getattr(e, "status_code", None),
        "code": getattr(e, "code", None),
        "type": getattr(e, "type", None),
        "param": getattr(e, "param", None),
        "message": getattr(e, "message", str(e)),
        "body": getattr(e, "body", None) if isinstance(getattr(e, "body", None), (dict, list, str)) else None,
    }
    response = getattr(e, "response", None)
    if response is not None:
        headers = response.headers
        out["headers"] = {
            name: headers.get(name)
            for name in (
                "x-request-id",
                "retry-after",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "content-type",
            )
        }
    return out


def expect_error(fn):
    """Run fn, which should raise an SDK error; describe what happened."""
    try:
        result = fn()
    except openai.OpenAIError as e:
        return describe(e)
    return {"class": None, "returned": repr(result)[:500]}


def msg(text):
    return [{"role": "user", "content": text}]


def check_chat(base, keys):
    c = client(base, keys["main"])
    raw = c.chat.completions.with_raw_response.create(
        model=FLASH, messages=msg("Say hi. [[sim reply=5 prompt=10]]")
    )
    r = raw.parse()
    choice = r.choices[0]
    return {
        "request_id": raw.headers.get("x-request-id"),
        "object": r.object,
        "model": r.model,
        "n_choices": len(r.choices),
        "content": choice.message.content,
        "role": choice.message.role,
        "finish_reason": choice.finish_reason,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "total_tokens": r.usage.total_tokens,
    }


def collect_stream(stream):
    text = []
    chunks = 0
    models = set()
    finish = None
    usages = []
    for chunk in stream:
        chunks += 1
        models.add(chunk.model)
        if chunk.usage is not None:
            usages.append(
                {
                    "prompt_tokens": chunk.usage.prompt_tokens,
                    "completion_tokens": chunk.usage.completion_tokens,
                    "total_tokens": chunk.usage.total_tokens,
                    "chunk_index": chunks - 1,
                }
            )
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
    return {
        "text": "".join(text),
        "chunks": chunks,
        "models": sorted(models),
        "finish_reason": finish,
        "usages": usages,
    }


def check_stream(base, keys):
    c = client(base, keys["main"])
    stream = c.chat.completions.create(
        model=FLASH, messages=msg("Stream please. [[sim reply=7 prompt=12]]"), stream=True
    )
    return collect_stream(stream)


def check_stream_usage(base, keys):
    c = client(base, keys["main"])
    stream = c.chat.completions.create(
        model=FLASH,
        messages=msg("Stream with usage. [[sim reply=5 prompt=10]]"),
        stream=True,
        stream_options={"include_usage": True},
    )
    return collect_stream(stream)


def check_models(base, keys):
    c = client(base, keys["main"])
    listed = c.models.list()
    one = c.models.retrieve(FLASH)
    return {
        "ids": [m.id for m in listed.data],
        "objects": sorted({m.object for m in listed.data}),
        "retrieve_id": one.id,
        "retrieve_pro": expect_error(lambda: c.models.retrieve("deepseek-v4-pro")),
        "retrieve_unknown": expect_error(lambda: c.models.retrieve("no-such-model")),
    }


def check_bad_key(base, keys):
    c = client(base, "sk-gateway-" + "Zz9" * 14)
    return expect_error(lambda: c.chat.completions.create(model=FLASH, messages=msg("hi")))


def check_no_budget(base, keys):
    c = client(base, keys["tiny"])
    return expect_error(
        lambda: c.chat.completions.create(model=FLASH, messages=msg("hi [[sim reply=5]]"))
    )


def check_no_budget_not_retried(base, keys):
    """With the SDK's default retries (2), a 402 is still sent once: the key's RPM counter,
    echoed in x-ratelimit-remaining-requests, drops by exactly one per call."""
    retrying = openai.OpenAI(base_url=f"{base}/v1", api_key=keys["tiny_slow"], timeout=60)
    once = client(base, keys["tiny_slow"])
    first = expect_error(
        lambda: retrying.chat.completions.create(model=FLASH, messages=msg("hi"))
    )
    second = expect_error(lambda: once.chat.completions.create(model=FLASH, messages=msg("hi")))
    return {"sdk_max_retries": retrying.max_retries, "first": first, "second": second}


def check_model_not_allowed(base, keys):
    c = client(base, keys["main"])
    return expect_error(
        lambda: c.chat.completions.create(model="deepseek-v4-pro", messages=msg("hi"))
    )


def check_unknown_model(base, keys):
    c = client(base, keys["main"])
    return expect_error(
        lambda: c.chat.completions.create(model="deepseek-v9-imaginary", messages=msg("hi"))
    )


def check_rate_limit(base, keys):
    c = client(base, keys["rate"])
    ok = []
    for _ in range(2):
        r = c.chat.completions.create(model=FLASH, messages=msg("[[sim reply=1]]"))
        ok.append(r.choices[0].message.content)
    third = expect_error(
        lambda: c.chat.completions.create(model=FLASH, messages=msg("[[sim reply=1]]"))
    )
    return {"first_two": ok, "third": third}


def stream_failure(base, keys, directive):
    c = client(base, keys["main"])
    text = []
    chunks = 0
    error = None
    try:
        stream = c.chat.completions.create(
            model=FLASH, messages=msg(f"Fail mid-way. {directive}"), stream=True
        )
        for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                if choice.delta.content:
                    text.append(choice.delta.content)
    except openai.OpenAIError as e:
        error = describe(e)
    return {"text": "".join(text), "chunks": chunks, "error": error}


def check_stream_error_event(base, keys):
    return stream_failure(base, keys, "[[sim reply=10 error_after=3]]")


def check_stream_dropped(base, keys):
    return stream_failure(base, keys, "[[sim reply=10 drop_after=3]]")


def check_docs_stream_break(base, keys):
    """The /docs page's streaming example, run as written (its question given the simulator's
    markers for a long answer) with the SDK client the page's first example makes, left after
    five chunks the way a `break` leaves it. The page read the stream in a plain `for` loop:
    leaving it kept the connection open until Python's cycle collector ran, and the key paid for
    the whole answer (found by an independent check). The collector is off here, so only the
    example itself can close the stream. Returns the request id and the chunks read."""
    import gc
    import html
    import re
    import time
    import urllib.request

    page = urllib.request.urlopen(base + "/docs").read().decode()
    section = page[page.index('<section id="python">'):]
    blocks = re.findall(r"<code>(.*?)</code>", section, re.S)
    code = next(html.unescape(b) for b in blocks if "stream=True" in b)
    code = re.sub(
        r'"content": "[^"]*"', '"content": "[[sim reply=2000 delay_ms=1]] a long story"', code
    )

    class Left(Exception):
        pass

    seen = []

    def printing(*args, **kwargs):
        seen.append(args)
        if len(seen) == 5:
            raise Left()

    scope = {"client": client(base, keys["main"]), "print": printing}
    gc.disable()
    try:
        try:
            exec(code, scope)
        except Left:
            pass
        # The program goes on with other work, longer than the answer takes to make (~2 s):
        # the answer must not go on with it.
        time.sleep(5)
    finally:
        gc.enable()
    stream = scope.get("stream")
    return {
        "request_id": stream.response.headers.get("x-request-id") if stream is not None else None,
        "chunks": len(seen),
        "with_block": "with client.chat.completions.create(" in code,
    }


CHECKS = {
    "chat": check_chat,
    "docs_stream_break": check_docs_stream_break,
    "stream": check_stream,
    "stream_usage": check_stream_usage,
    "models": check_models,
    "bad_key": check_bad_key,
    "no_budget": check_no_budget,
    "no_budget_not_retried": check_no_budget_not_retried,
    "model_not_allowed": check_model_not_allowed,
    "unknown_model": check_unknown_model,
    "rate_limit": check_rate_limit,
    "stream_error_event": check_stream_error_event,
    "stream_dropped": check_stream_dropped,
}


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    base, keys = argv[1].rstrip("/"), json.loads(argv[2])
    results = {"openai_version": openai.__version__}
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
