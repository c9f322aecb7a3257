//! The declaration of [`A11yTexts`]: what the pages say for people who do not see them or do
//! not use a mouse — the skip link, the states a page's title announces, the copy buttons'
//! fallback, the labels of scrolling regions, the chart as a table. Values in `a11y_en.rs` and
//! `a11y_zh.rs`.

texts! {
    @named A11yTexts, "The strings of the pages' accessibility aids.";
    /// The skip link, first on every page (visible when focused).
    skip_link,
    /// Label of a scrolling code sample (keyboard users focus it to scroll it).
    code_label,
    /// What a copy button says when the clipboard cannot be written (plain HTTP on a host that
    /// is not this machine): the key is selected instead.
    copy_select_key,
    /// The same, for the base URL.
    copy_select_url,
    /// `<title>` state of an order look-up that found nothing (before " — " and the page's).
    order_not_found_title,
    /// `<title>` state of a dashboard look-up that found no key.
    dash_not_found_title,
    /// `<title>` state of a dashboard showing a key's usage, `{prefix}`.
    dash_found_title,
    /// The chart's table, behind a disclosure: what opens it.
    chart_table_show,
    /// The chart's table: its caption.
    chart_table_caption,
    /// The chart's table: the date column.
    chart_col_date,
    /// The chart's table: the amount column.
    chart_col_spent,
    /// The chart's table: after today's date.
    chart_today,
}
