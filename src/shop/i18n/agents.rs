//! The declaration of [`AgentTexts`]: the strings of the docs section on Claude Code and other
//! Anthropic clients, one field each. Values in `agents_en.rs` and `agents_zh.rs`.

texts! {
    @named AgentTexts, "The strings of the docs section on Anthropic clients.";
    /// Section heading (also in the table of contents).
    h,
    /// What the section is about: same key, same balance.
    lead,
    /// Endpoint table: the Messages API.
    ep_messages,
    /// Endpoint table: token counting.
    ep_count,
    /// Where the key goes and which base URL to give.
    auth_p,
    /// Claude Code sub-heading.
    cc_h,
    /// Before the environment variables.
    cc_p,
    /// What the model variables choose.
    cc_models,
    /// Python sub-heading.
    py_h,
    /// Before the Python snippet.
    py_p,
    /// Streaming with the SDK.
    py_stream,
    /// Model names sub-heading.
    names_h,
    /// How names map to models.
    names_p,
    /// Column: the name a client sends.
    col_name,
    /// Column: the model that serves it.
    col_served,
    /// When no alias is configured.
    names_none,
    /// Sample user message.
    sample_hello,
    /// Token counting is an estimate.
    count_p,
    /// The error shape in this dialect.
    errors_p,
}
