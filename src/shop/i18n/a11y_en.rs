//! The pages' accessibility aids, in English.

use super::A11yTexts;

/// The pages' accessibility aids, in English.
pub static A11Y_EN: A11yTexts = A11yTexts {
    skip_link: "Skip to main content",
    code_label: "Code sample",
    copy_select_key: "The key is selected: press Ctrl+C (⌘C on a Mac) to copy it.",
    copy_select_url: "The base URL is selected: press Ctrl+C (⌘C on a Mac) to copy it.",
    order_not_found_title: "Order not found",
    dash_not_found_title: "Key not found",
    dash_found_title: "Usage of {prefix}",
    chart_table_show: "Show as a table",
    chart_table_caption: "Spend per day over the last 30 days (UTC), oldest first",
    chart_col_date: "Date (UTC)",
    chart_col_spent: "Spent (USD)",
    chart_today: "today",
};
