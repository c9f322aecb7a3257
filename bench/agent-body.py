#!/usr/bin/env python3
"""A Messages request shaped like the ones Claude Code sends (for bench/callgrind.sh): a system
prompt of text blocks with cache_control, 16 tools with JSON-schema inputs, and a conversation of
a few turns with thinking, tool_use and tool_result blocks (one of them a 16 KB file read), with
stream, thinking, metadata and max_tokens 32000. Deterministic; about 70 KB. Prints it to stdout.

    bench/agent-body.py [stream|whole] > body.json
"""
import json
import sys

WORDS = ("the request path reads the body once then relays it to upstream while billing holds "
         "the worst case against the key balance and settles the exact cost from usage").split()


def prose(n_words, seed):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n_words))


def tool(i):
    props = {
        f"arg_{j}": {"type": ["string", "integer", "boolean"][j % 3],
                     "description": prose(18, i * 10 + j)}
        for j in range(8)
    }
    props["options"] = {"type": "object", "properties": {
        "mode": {"type": "string", "enum": ["fast", "careful", "dry_run"]},
        "timeout": {"type": "integer", "minimum": 1, "maximum": 600000}}}
    return {"name": f"Tool{i}", "description": prose(120, i),
            "input_schema": {"type": "object", "properties": props,
                             "required": ["arg_0", "arg_1"], "additionalProperties": False,
                             "$schema": "http://json-schema.org/draft-07/schema#"}}


def file_text(lines):
    return "\n".join(f"{n:>6}\t    let value_{n} = compute(\"{prose(6, n)}\", {n});"
                     for n in range(1, lines + 1))


def body(stream):
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\n" + prose(200, 1) + "\n</system-reminder>"},
            {"type": "text", "text": "Find where the hold is taken and explain it."}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": prose(80, 2), "signature": "sig-" + "A" * 120},
            {"type": "text", "text": "I'll search for it."},
            {"type": "tool_use", "id": "toolu_01", "name": "Tool3",
             "input": {"arg_0": "fn reserve", "arg_1": 3, "options": {"mode": "fast", "timeout": 120000}}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01",
             "content": "src/gateway/billing.rs:88: pub fn reserve(\nsrc/gateway/admission.rs:140: let hold = reserve("}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_02", "name": "Tool1",
             "input": {"arg_0": "/work/src/gateway/billing.rs", "arg_1": 0, "arg_2": True}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_02",
             "content": [{"type": "text", "text": file_text(220)}]},
            {"type": "text", "text": "Keep it short.", "cache_control": {"type": "ephemeral"}}]},
    ]
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": prose(1500, 3), "cache_control": {"type": "ephemeral"}}],
        "tools": [tool(i) for i in range(16)],
        "messages": messages,
        "metadata": {"user_id": "user_0123456789abcdef_account__session_01234567-89ab"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "temperature": 1,
    }


if __name__ == "__main__":
    stream = len(sys.argv) < 2 or sys.argv[1] != "whole"
    sys.stdout.write(json.dumps(body(stream), separators=(",", ":")))
