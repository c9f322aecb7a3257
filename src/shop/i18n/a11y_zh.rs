//! The pages' accessibility aids, in Chinese.

use super::A11yTexts;

/// The pages' accessibility aids, in Chinese.
pub static A11Y_ZH: A11yTexts = A11yTexts {
    skip_link: "跳到正文",
    code_label: "代码示例",
    copy_select_key: "key 已选中：按 Ctrl+C（Mac 上按 ⌘C）即可复制。",
    copy_select_url: "Base URL 已选中：按 Ctrl+C（Mac 上按 ⌘C）即可复制。",
    order_not_found_title: "未找到订单",
    dash_not_found_title: "未找到 key",
    dash_found_title: "{prefix} 的用量",
    chart_table_show: "以表格显示",
    chart_table_caption: "最近 30 天每日消费（UTC 日期，从早到晚）",
    chart_col_date: "日期（UTC）",
    chart_col_spent: "消费（美元）",
    chart_today: "今天",
};
