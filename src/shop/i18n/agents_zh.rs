//! The docs section on Anthropic clients, in Chinese.

use super::AgentTexts;

/// The docs section on Anthropic clients, in Chinese.
pub static AGENTS_ZH: AgentTexts = AgentTexts {
    h: "Claude Code 与其他 Anthropic 客户端",
    lead: "你的 key 同样支持 Anthropic 的 Messages API，因此 Claude Code 和官方 anthropic SDK 都可以直接使用。两种格式的请求从同一余额扣费，按相同的每 token 价格计费，合计永远不会超过 key 的余额。",
    ep_messages: "Anthropic 的 Messages API，支持流式（供 Claude Code 和 anthropic SDK 使用）；/anthropic 下也可访问",
    ep_count: "估算一个 Messages 请求的输入 token 数",
    auth_p: "请将 key 放在 x-api-key 请求头中，或使用 Authorization: Bearer。客户端的 base URL 请填写本站地址，不带 /v1（SDK 会自行加上 /v1/messages）；在地址后加 /anthropic 也可以。只会自行加上 /messages 的客户端（Vercel AI SDK 的 Anthropic provider）需要填写本站地址加 /v1 或 /anthropic。",
    cc_h: "在 Claude Code 中使用",
    cc_p: "在启动 claude 的终端中设置以下环境变量：",
    cc_models: "ANTHROPIC_MODEL 是对话所用的模型；ANTHROPIC_SMALL_FAST_MODEL（较新版本为 ANTHROPIC_DEFAULT_HAIKU_MODEL）用于简短的后台任务。Claude Code 自行选择的 Claude 模型名同样可用：见下方的名称表。",
    py_h: "Python（anthropic SDK）",
    py_p: "安装 SDK：",
    py_stream: "流式输出：",
    names_h: "模型名称",
    names_p: "除上面的模型名外，以下名称也可使用，并由其右侧的模型提供服务（* 匹配任意结尾；以最长匹配为准）。你的套餐必须包含提供服务的那个模型。",
    col_name: "你发送的名称",
    col_served: "实际模型",
    names_none: "本站未配置其他名称：请使用上面的模型名。",
    sample_hello: "你好！",
    count_p: "POST /v1/messages/count_tokens 返回的是我们自己的估算（DeepSeek 没有计数接口）：约为文本字节数的四分之一，每条消息再加几个 token。实际扣费以 DeepSeek 返回的真实用量为准，而不是这个估算（且不超过请求开始时预留的金额——按请求体大小计输入、按 max_tokens 计输出——若 DeepSeek 报告的用量更多，则按预留计费，记录的计量方式标为“已封顶”）。",
    errors_p: "错误采用 Anthropic 的格式：{\"type\": \"error\", \"error\": {\"type\": …, \"message\": …}}，状态码与下表相同：400 invalid_request_error、401 authentication_error、402 billing_error、403 permission_error、404 not_found_error、413 request_too_large、429 rate_limit_error、500 与 502 api_error、503 overloaded_error、504 timeout_error。SDK 会抛出对应的异常；流式请求中途失败时以一个 error 事件结束。",
};
