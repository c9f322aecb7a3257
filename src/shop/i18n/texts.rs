//! The declaration of [`Texts`]: every string the storefront shows, one field each, with what
//! it is for (the `texts!` macro is defined in `i18n.rs`). The values are in `en.rs` and
//! `zh.rs`.

texts! {
    // Layout.
    /// Site name in the header and titles.
    site_name,
    /// `<meta name="description">`.
    meta_description,
    /// Banner shown in demo mode (after a "DEMO" tag).
    demo_banner,
    /// ARIA label of the main navigation.
    nav_label,
    /// Nav: home.
    nav_home,
    /// Nav: pricing.
    nav_pricing,
    /// Nav: docs.
    nav_docs,
    /// Nav: order look-up.
    nav_order,
    /// Nav: dashboard.
    nav_dashboard,
    /// ARIA label of the language switch.
    lang_label,
    /// Footer: independent service, not affiliated with DeepSeek.
    footer_disclaimer,
    /// Separator of lists in prose (", " / "、").
    list_sep,
    /// Between a label and its text (": " / "：").
    label_sep,
    /// Copy button.
    copy,
    /// Copy button after copying.
    copied,
    /// "Order ID".
    order_id_label,
    /// "Base URL".
    base_url_label,
    /// Email field label.
    email_label,
    /// Email field placeholder.
    email_placeholder,
    /// "Plan".
    label_plan,
    /// "Amount".
    label_amount,
    /// "Status".
    label_status,
    /// "Created".
    label_created,
    /// "Paid".
    label_paid,
    /// "Merchant" (demo approval page).
    label_merchant,
    /// Back link to a form after a refusal.
    back_to_form,

    // Home.
    /// Home: `<title>`.
    home_title,
    /// Home: headline.
    home_h1,
    /// Home: lead paragraph.
    home_lead,
    /// Home: button to pricing.
    home_cta_pricing,
    /// Home: button to docs.
    home_cta_docs,
    /// Home: "Plans from" (before the cheapest price).
    home_from,
    /// Home: after the cheapest price.
    home_no_account,
    /// Home: ARIA label of the feature list.
    home_features_label,
    /// Home: feature 1 title.
    home_f1_title,
    /// Home: feature 1 text.
    home_f1_body,
    /// Home: feature 2 title.
    home_f2_title,
    /// Home: feature 2 text.
    home_f2_body,
    /// Home: feature 3 title.
    home_f3_title,
    /// Home: feature 3 text.
    home_f3_body,
    /// Home: models heading.
    home_models_h,
    /// Home: note under the models (units).
    home_models_note,
    /// Home: link to the full price table.
    home_models_link,
    /// Home: quick start heading.
    home_qs_h,
    /// Home: quick start step 1.
    home_qs_1,
    /// Home: quick start step 2.
    home_qs_2,
    /// Home: quick start step 3 (before `pip install openai`).
    home_qs_3,
    /// Home: pointer to the docs.
    home_qs_more,
    /// Home: closing call to action heading.
    home_cta_h,
    /// Home: closing call to action text.
    home_cta_body,
    /// Model facts: max output tokens.
    model_max_output,
    /// Model facts: plans that include it.
    model_in_plans,
    /// Model facts: no plan on sale includes it.
    model_no_plan,
    /// Code samples: comment after the placeholder key.
    code_comment_key,
    /// Code samples: a greeting.
    sample_hello,
    /// Code samples: a story request.
    sample_story,
    /// Code samples: a counting request.
    sample_count,

    // Pricing.
    /// Pricing: heading and title.
    pricing_title,
    /// Pricing: lead.
    pricing_lead,
    /// Pricing: nothing on sale.
    pricing_none,
    /// Pricing: how a plan works.
    pricing_how,
    /// Plan card: after the price.
    plan_price_unit,
    /// Plan card: budget.
    plan_budget,
    /// Plan card: models.
    plan_models,
    /// Plan card: rate limit.
    plan_rate,
    /// Unit after an RPM number.
    rpm_unit,
    /// Plan card: buy button.
    plan_buy,
    /// Pricing: token prices heading.
    pricing_tokens_h,
    /// Pricing: token prices lead.
    pricing_tokens_lead,
    /// Pricing: note under the table.
    pricing_tokens_note,
    /// Pricing: link to billing docs.
    pricing_billing_link,
    /// Price table caption (units).
    prices_caption,
    /// Column: model.
    col_model,
    /// Column: price period.
    col_period,
    /// Column / term: input served from cache.
    col_cache_hit,
    /// Column / term: input not in cache.
    col_cache_miss,
    /// Column / term: output.
    col_output,
    /// Off-peak.
    period_off_peak,
    /// Peak.
    period_peak,
    /// Price table: the one period when no peak hours are set.
    period_all,
    /// When peak prices apply: `{windows}`, `{days}`.
    peak_rule,
    /// No peak windows configured.
    peak_none,
    /// Peak rule: a window past midnight belongs to the day it starts.
    peak_wrap,
    /// Peak rule: dates off-peak all day; {dates}.
    peak_off_dates,
    /// Monday to Friday.
    days_weekdays,
    /// Every day.
    days_every,
    /// Monday.
    day_mon,
    /// Tuesday.
    day_tue,
    /// Wednesday.
    day_wed,
    /// Thursday.
    day_thu,
    /// Friday.
    day_fri,
    /// Saturday.
    day_sat,
    /// Sunday.
    day_sun,

    // Checkout.
    /// Checkout: heading.
    checkout_title,
    /// Checkout: form heading.
    checkout_pay_h,
    /// Checkout: what the email is for.
    checkout_email_hint,
    /// Checkout: what the email is for, when the daemon sends mail (receipts).
    checkout_email_hint_mail,
    /// Checkout: "Total:".
    checkout_total,
    /// Checkout: the demo pay button.
    checkout_pay_demo,
    /// Checkout: demo explanation.
    checkout_demo_hint,
    /// Checkout: PayPal client id missing.
    checkout_unconfigured,
    /// Checkout: under PayPal's buttons.
    checkout_paypal_hint,
    /// Checkout: JavaScript disabled.
    checkout_noscript,
    /// Checkout, back from PayPal with JavaScript disabled: finish on the order page.
    checkout_resume_noscript,
    /// Checkout: success heading.
    checkout_paid_h,
    /// "Your API key:".
    checkout_key_label,
    /// Checkout: save the key and order id (followed by a link to the look-up).
    checkout_save_warning,
    /// Checkout: next step, docs.
    checkout_next_docs,
    /// Checkout: next step, dashboard.
    checkout_next_dashboard,
    /// Checkout: pending heading.
    checkout_pending_h,
    /// Checkout: plan column heading.
    checkout_plan_h,
    /// Checkout: back to pricing.
    checkout_change_plan,
    /// Checkout script: network failure.
    js_network,
    /// Checkout script: generic failure.
    js_failed,
    /// Checkout script: creating the order.
    js_creating,
    /// Checkout script: capturing.
    js_capturing,
    /// Checkout script: buyer cancelled at PayPal.
    js_cancelled,
    /// Checkout script: PayPal's SDK did not load.
    js_sdk_missing,
    /// Checkout script: capture pending.
    js_pending,
    /// Checkout script: heading when paid but the key is shown elsewhere.
    js_paid_h,
    /// Checkout script: paid, key shown only to the buying browser or at the look-up.
    js_paid_elsewhere,
    /// Checkout script: the order is paid and its key was replaced since (shown once, then).
    js_key_replaced,
    /// Checkout script: the server failed (500): try again.
    js_server_error,
    /// Checkout script: the order could not be recorded now (503): nothing charged, try later.
    js_busy,
    /// Checkout script: not approved at PayPal yet.
    js_not_approved,
    /// Checkout script: payment declined.
    js_declined,
    /// Checkout script: order refunded.
    js_refunded,
    /// Checkout script: a top-up's capture pending.
    js_pending_topup,
    /// Checkout script: a top-up's payment declined.
    js_declined_topup,
    /// Checkout script: PayPal no longer knows the order (expired or unknown).
    js_order_expired,
    /// Checkout script: another PayPal (app or environment) made the order.
    js_other_paypal,
    /// Checkout script: the heading above [`Self::js_other_paypal`].
    js_other_paypal_h,
    /// Checkout script: PayPal did not answer (creating or capturing).
    js_provider,
    /// Checkout script: PayPal declined the payment method at capture.
    js_declined_method,
    /// Checkout script: paid, but not recorded yet.
    js_not_recorded,
    /// Checkout script: the order's plan is no longer sold.
    js_plan_withdrawn,
    /// Checkout script: the per-address limit.
    js_too_many,
    /// Checkout script: the page's form or grant expired.
    js_reload,
    /// Checkout script: the email is not valid.
    js_email,
    /// Checkout: the button that tries the capture of an approved order again.
    checkout_retry,
    /// Checkout: before the order id when a capture failed.
    checkout_retry_note,
    /// Demo approval: "simulated" tag.
    demo_sim_tag,
    /// Demo approval: heading.
    demo_approve_title,
    /// Demo approval: lead.
    demo_approve_lead,
    /// Demo approval: button.
    demo_approve_button,
    /// Demo approval: what happens next.
    demo_approve_hint,
    /// Demo approval: cancel link.
    demo_approve_cancel,
    /// Demo approval refused: heading.
    demo_refused_h,
    /// Demo approval refused: text.
    demo_refused_body,

    // Order look-up.
    /// Order: heading.
    order_title,
    /// Order: lead.
    order_lead,
    /// Order: submit button.
    order_submit,
    /// Order: hint under the form.
    order_hint,
    /// Order: where to find the order id.
    order_where,
    /// Order: the one answer for an unknown id or a wrong email.
    order_not_found,
    /// Order: result heading.
    order_result_h,
    /// Order: keep the key private.
    order_key_warning,
    /// Order status: created.
    order_created,
    /// Order status, when another PayPal made it and it cannot be checked here.
    order_unchecked,
    /// Order status: pending.
    order_pending,
    /// Order status: paid.
    order_paid,
    /// Order status: failed.
    order_failed,
    /// Order status: held for review.
    order_review,
    /// Order status: refunded.
    order_refunded,
    /// Order note: created.
    order_note_created,
    /// Order note: pending.
    order_note_pending,
    /// Order note: paid.
    order_note_paid,
    /// Order note: paid but the key cannot be shown.
    order_note_paid_nokey,
    /// Order note: failed.
    order_note_failed,
    /// Order note: held for review.
    order_note_review,
    /// Order note: refunded.
    order_note_refunded,

    // Dashboard.
    /// Dashboard: heading.
    dash_title,
    /// Dashboard: lead.
    dash_lead,
    /// Dashboard: key field label.
    dash_key_label,
    /// Dashboard: submit button.
    dash_submit,
    /// Dashboard: hint under the field.
    dash_hint,
    /// Dashboard: unknown key.
    dash_not_found,
    /// Dashboard: budget.
    dash_budget,
    /// Dashboard: spent.
    dash_spent,
    /// Dashboard: remaining.
    dash_remaining,
    /// Dashboard: requests.
    dash_requests,
    /// Dashboard: prompt tokens.
    dash_tokens_prompt,
    /// Dashboard: of which cached.
    dash_tokens_cached,
    /// Dashboard: output tokens.
    dash_tokens_output,
    /// Dashboard: of which reasoning.
    dash_tokens_reasoning,
    /// Dashboard: exhausted key.
    dash_note_exhausted,
    /// Dashboard: revoked key.
    dash_note_revoked,
    /// Dashboard: where the JSON is.
    dash_api_note,
    /// Key status: active.
    key_active,
    /// Key status: exhausted.
    key_exhausted,
    /// Key status: revoked.
    key_revoked,
    /// Chart: heading.
    chart_h,
    /// Chart: SVG title.
    chart_title,
    /// Chart: caption.
    chart_caption,
    /// Chart: nothing spent.
    chart_empty,
    /// Recent requests: heading.
    recent_h,
    /// Recent requests: none.
    recent_empty,
    /// Recent requests: what the bracketed numbers are.
    recent_note,
    /// Column: time.
    col_time,
    /// Column: prompt tokens (cached).
    col_prompt,
    /// Column: output tokens.
    col_completion,
    /// Column: cost.
    col_cost,
    /// Column: how the tokens were counted.
    col_measured,
    /// Column: how the request ended.
    col_finish,
    /// Tag: streamed request.
    tag_stream,
    /// Counted by: the provider.
    measured_provider,
    /// Counted by: estimate.
    measured_estimated,
    /// Tooltip: provider counts.
    measured_provider_help,
    /// Tooltip: estimated counts.
    measured_estimated_help,
    /// Counted by: upstream, capped.
    measured_clamped,
    /// Tooltip: capped counts.
    measured_clamped_help,
    /// Finish: complete.
    finish_complete,
    /// Finish: client went away.
    finish_client_abort,
    /// Finish: upstream error.
    finish_upstream_error,
    /// Finish: upstream timeout.
    finish_upstream_timeout,
    /// Finish: rejected by upstream.
    finish_rejected,
    /// Finish: cut at shutdown.
    finish_shutdown,

    // Docs.
    /// Docs: heading.
    docs_title,
    /// Docs: lead.
    docs_lead,
    /// Docs: table of contents.
    docs_toc,
    /// Docs: what this is.
    docs_what_h,
    /// Docs: what it does.
    docs_what_p1,
    /// Docs: not affiliated with DeepSeek.
    docs_what_p2,
    /// Docs: the endpoints.
    docs_what_p3,
    /// Column: endpoint.
    col_endpoint,
    /// Column: use.
    col_what,
    /// Endpoint: chat.
    docs_ep_chat,
    /// Endpoint: models.
    docs_ep_models,
    /// Endpoint: legacy billing.
    docs_ep_legacy,
    /// Endpoint: usage JSON.
    docs_ep_usage,
    /// Docs: buying heading.
    docs_buy_h,
    /// Buying step 1.
    docs_buy_1,
    /// Buying step 2.
    docs_buy_2,
    /// Docs, how to buy, step 2, when the daemon sends mail (receipts).
    docs_buy_2_mail,
    /// Buying step 3.
    docs_buy_3,
    /// Buying step 4.
    docs_buy_4,
    /// Buying step 5.
    docs_buy_5,
    /// Docs: plans on sale.
    docs_buy_plans,
    /// Docs: Python heading.
    docs_python_h,
    /// Docs: Python intro.
    docs_python_p1,
    /// Docs: streaming heading.
    docs_stream_h,
    /// Docs: streaming intro.
    docs_stream_p,
    /// Docs: thinking mode.
    docs_thinking_p,
    /// Docs: environment variables.
    docs_python_env,
    /// Docs: curl heading.
    docs_curl_h,
    /// Docs: curl intro.
    docs_curl_p,
    /// Docs: curl streaming.
    docs_curl_stream,
    /// Docs: curl models.
    docs_curl_models,
    /// Docs: models heading.
    docs_models_h,
    /// Column: plans with the model.
    col_plans,
    /// Docs: 403 for a model outside the plan.
    docs_models_403,
    /// Docs: balance heading.
    docs_balance_h,
    /// Docs: balance on the dashboard.
    docs_balance_dash,
    /// Docs: balance over the API.
    docs_balance_api,
    /// Docs: the JSON fields.
    docs_balance_fields,
    /// Docs: legacy endpoints.
    docs_balance_legacy,
    /// Docs: legacy endpoints' units.
    docs_balance_legacy_note,
    /// Docs: billing heading.
    docs_billing_h,
    /// Docs: billing intro.
    docs_billing_p1,
    /// Docs: cache hit explained.
    docs_billing_hit,
    /// Docs: cache miss explained.
    docs_billing_miss,
    /// Docs: output explained.
    docs_billing_out,
    /// Docs: the cost formula.
    docs_billing_formula,
    /// Docs: rounding.
    docs_billing_round,
    /// Docs: the period is fixed at the start.
    docs_billing_period,
    /// Docs: holds heading.
    docs_hold_h,
    /// Docs: holds.
    docs_hold_p1,
    /// Docs: lowering max_tokens.
    docs_hold_p2,
    /// Docs: exhausted heading.
    docs_empty_h,
    /// Docs: 402 at $0.
    docs_empty_p,
    /// Docs: aborted streams heading.
    docs_abort_h,
    /// Docs: aborted streams.
    docs_abort_p,
    /// Docs: SillyTavern heading.
    docs_st_h,
    /// SillyTavern step 1.
    docs_st_1,
    /// SillyTavern step 2.
    docs_st_2,
    /// SillyTavern step 3 (before the URL).
    docs_st_3,
    /// SillyTavern step 4.
    docs_st_4,
    /// SillyTavern step 5.
    docs_st_5,
    /// SillyTavern step 6.
    docs_st_6,
    /// SillyTavern: max response length.
    docs_st_note,
    /// Other apps.
    docs_other_apps,
    /// Docs: errors heading.
    docs_errors_h,
    /// Docs: errors intro.
    docs_errors_p,
    /// Column: HTTP status.
    col_status,
    /// Column: error code.
    col_code,
    /// Column: meaning.
    col_meaning,
    /// Column: what to do.
    col_todo,
    /// 400: meaning.
    err_400_what,
    /// 400: what to do.
    err_400_todo,
    /// 401: meaning.
    err_401_what,
    /// 401: what to do.
    err_401_todo,
    /// 402: meaning.
    err_402_what,
    /// 402: what to do.
    err_402_todo,
    /// 403: meaning.
    err_403_what,
    /// 403: what to do.
    err_403_todo,
    /// 404: meaning.
    err_404_what,
    /// 404: what to do.
    err_404_todo,
    /// 413: meaning, `{size}`.
    err_413_what,
    /// 413: what to do.
    err_413_todo,
    /// 429: meaning (followed by the plans' RPM).
    err_429_what,
    /// 429: what to do.
    err_429_todo,
    /// Errors table: 429 too_many_in_flight, meaning (the plans' limits follow).
    err_429_flight_what,
    /// Errors table: 429 too_many_in_flight, what to do.
    err_429_flight_todo,
    /// Errors table: 429 budget_held, meaning.
    err_429_held_what,
    /// Errors table: 429 budget_held, what to do.
    err_429_held_todo,
    /// 502: meaning.
    err_502_what,
    /// 504: meaning.
    err_504_what,
    /// Error table: 503 `upstream_busy`, what it means.
    err_503_busy_what,
    /// Error table: 503 `upstream_busy`, what to do.
    err_503_busy_todo,
    /// Error table: 503 `service_unavailable`, what it means.
    err_503_unavailable_what,
    /// 5xx: what to do.
    err_5xx_todo,
    /// Docs: errors mid-stream.
    docs_errors_stream,
    /// Docs: x-request-id.
    docs_errors_retry,
    /// Docs: disclaimer heading.
    docs_disclaimer_h,
    /// Docs: disclaimer.
    docs_disclaimer,

    // Refusals and errors.
    /// 404 heading.
    notfound_h,
    /// 404: no such page.
    notfound_page,
    /// 404: unknown or withdrawn plan.
    notfound_plan,
    /// 404: unknown order.
    notfound_order,
    /// 403 (CSRF) heading.
    csrf_h,
    /// 403 (CSRF) text.
    csrf_body,
    /// 429 heading.
    limit_h,
    /// 429 text.
    limit_body,
    /// 400 heading.
    badform_h,
    /// 400 text.
    badform_body,
    /// 500 heading.
    error_h,
    /// 500 text.
    error_body,
}
