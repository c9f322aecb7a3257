//! The docs section on Anthropic clients, in English.

use super::AgentTexts;

/// The docs section on Anthropic clients, in English.
pub static AGENTS_EN: AgentTexts = AgentTexts {
    h: "Claude Code and other Anthropic clients",
    lead: "Your key also speaks Anthropic's Messages API, so Claude Code and the official anthropic SDKs work with it. Requests in either format are charged to the same balance at the same per-token prices, and together they can never spend more than the key has.",
    ep_messages: "Anthropic's Messages API, streaming included (for Claude Code and the anthropic SDKs); also under /anthropic",
    ep_count: "An estimate of a Messages request's input tokens",
    auth_p: "Send the key in the x-api-key header or as Authorization: Bearer. Give clients the site's address without /v1 as the base URL (the SDKs add /v1/messages themselves); the address followed by /anthropic works too. A client that adds only /messages (the Vercel AI SDK's Anthropic provider) needs the address followed by /v1 or /anthropic.",
    cc_h: "Claude Code",
    cc_p: "Set these variables in the shell that starts claude:",
    cc_models: "ANTHROPIC_MODEL is the model of the conversation; ANTHROPIC_SMALL_FAST_MODEL (ANTHROPIC_DEFAULT_HAIKU_MODEL in newer versions) is used for short background tasks. The Claude names Claude Code picks by itself work too: see the table of names below.",
    py_h: "Python (anthropic SDK)",
    py_p: "Install the SDK:",
    py_stream: "Streaming:",
    names_h: "Model names",
    names_p: "Besides the model names above, these names are accepted and served by the model next to them (a * matches any ending; the longest match wins). Your plan must include the model that serves the name.",
    col_name: "Name you send",
    col_served: "Served by",
    names_none: "No other names are configured here: use the model names above.",
    sample_hello: "Hello!",
    count_p: "POST /v1/messages/count_tokens answers with our own estimate (DeepSeek has no counting endpoint): about a quarter of the text's bytes plus a few tokens per message. The charge uses DeepSeek's real counts, not this estimate (and never more than the request held when it started — its body's size as prompt, its max_tokens as output — should DeepSeek report more; the row then says capped).",
    errors_p: "Errors come in Anthropic's shape, {\"type\": \"error\", \"error\": {\"type\": …, \"message\": …}}, with the statuses of the table below: 400 invalid_request_error, 401 authentication_error, 402 billing_error, 403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 and 502 api_error, 503 overloaded_error, 504 timeout_error. The SDKs raise their matching exceptions; a stream that fails midway ends with an error event.",
};
