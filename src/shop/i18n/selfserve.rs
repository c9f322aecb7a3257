//! The declaration of [`SelfTexts`]: the strings of self-service (top-ups, key replacement,
//! budget history, notices' opt-out), one field each. Values in `selfserve_en.rs` and
//! `selfserve_zh.rs`.

texts! {
    @named SelfTexts, "The strings of self-service pages.";
    /// Dashboard: heading of the top-up section.
    topup_h,
    /// Dashboard: what a top-up does.
    topup_lead,
    /// Dashboard: a plan's top-up button; {name}, {budget}, {price}.
    topup_plan_button,
    /// Dashboard: a revoked key cannot be topped up.
    topup_revoked,
    /// Dashboard: heading of the budget history.
    history_h,
    /// Budget change: bought with the key.
    history_purchase,
    /// Budget change: granted by the operator with the key.
    history_grant,
    /// Budget change: top-up from the storefront.
    history_top_up,
    /// Budget change: credit added by the operator.
    history_operator_top_up,
    /// Budget change: a refunded top-up taken back.
    history_refund,
    /// Column: when.
    col_when,
    /// Column: what changed.
    col_change,
    /// Column: amount.
    col_amount,
    /// Dashboard: heading of the key replacement section.
    rotate_h,
    /// Dashboard: what replacing a key does.
    rotate_lead,
    /// Dashboard: the button that asks to replace the key.
    rotate_button,
    /// Dashboard: a revoked key cannot be replaced.
    rotate_revoked,
    /// Confirmation page heading.
    rotate_confirm_h,
    /// Confirmation page text; {prefix}.
    rotate_confirm_body,
    /// Confirmation button.
    rotate_confirm_button,
    /// Cancel link.
    rotate_cancel,
    /// Heading of the page that shows the new key.
    rotate_done_h,
    /// Text of the page that shows the new key.
    rotate_done_body,
    /// The key could not be replaced.
    rotate_failed,
    /// Replace: the same form's earlier sending is still replacing the key.
    rotate_pending,
    /// Replace: the key was replaced too often lately; {minutes} until the next may be.
    rotate_too_often,
    /// Checkout heading of a top-up.
    checkout_topup_title,
    /// Checkout: which key; {prefix}.
    checkout_topup_for,
    /// Checkout: the key field of a top-up.
    checkout_topup_key_label,
    /// Checkout: where the key goes.
    checkout_topup_key_hint,
    /// Checkout: what a top-up adds; {budget}.
    checkout_topup_note,
    /// Checkout: the email of a top-up.
    checkout_topup_email_hint,
    /// Checkout result heading of a top-up.
    checkout_topped_up_h,
    /// Checkout result of a top-up; {prefix}.
    checkout_topped_up,
    /// Checkout of a top-up: what PayPal's window does.
    checkout_topup_paypal_hint,
    /// Checkout script: a top-up of a key that is not ours.
    js_key_unknown,
    /// Checkout script: a top-up of a revoked key.
    js_key_revoked,
    /// Checkout script: a top-up past the largest budget.
    js_key_full,
    /// Pricing: for customers who already have a key.
    pricing_topup_note,
    /// Pricing: link to top up with a plan; {name}.
    pricing_topup_link,
    /// Order look-up: label of a top-up's key.
    order_kind_topup,
    /// Order look-up: label of what was refunded of the price.
    label_refunded,
    /// Order look-up note: a paid order of which PayPal refunded a part.
    order_note_partly_refunded,
    /// Order look-up: the key was replaced; {date}.
    order_replaced,
    /// Order look-up note: a paid order whose key was replaced since (the notice says so).
    order_note_paid_replaced,
    /// Order look-up note: a paid top-up (its key shown by prefix only).
    order_note_paid_topup,
    /// Order look-up: a paid top-up whose key's text was replaced since.
    order_note_paid_topup_replaced,
    /// Order look-up note: a top-up PayPal is still reviewing.
    order_note_pending_topup,
    /// Order look-up note: a top-up PayPal is still reviewing whose key was revoked since.
    order_note_pending_revoked,
    /// Order look-up note: an unpaid top-up whose key was revoked since (it cannot be paid).
    order_note_unpaid_revoked,
    /// Order look-up note: an unpaid order whose plan is no longer sold (it cannot be paid).
    order_note_unpaid_withdrawn,
    /// Order look-up note: PayPal holds the order's payment, which could not be recorded just
    /// now.
    order_note_unrecorded,
    /// Order look-up note: an unpaid (or pending) order another PayPal made, which cannot be
    /// asked here (the operator switched PayPal apps or environments since).
    order_note_other_paypal,
    /// Order look-up note: a refunded top-up (the key stays).
    order_note_refunded_topup,
    /// Order look-up note: a refunded top-up whose key was revoked since.
    order_note_refunded_topup_revoked,
    /// Order look-up note: a paid order (a purchase or a top-up) whose key was revoked since.
    order_note_paid_revoked,
    /// Order look-up note: a refunded purchase whose key was topped up (the key stays).
    order_note_refunded_kept,
    /// Order look-up note: a refunded order nothing had been given for (held for review, or
    /// refunded before its payment was recorded).
    order_note_refunded_ungiven,
    /// Opt-out page heading.
    optout_h,
    /// Opt-out confirmation; {prefix}.
    optout_body,
    /// Opt-out button.
    optout_button,
    /// Opt-out done heading.
    optout_done_h,
    /// Opt-out done; {prefix}.
    optout_done_body,
    /// Opt-out link not valid.
    optout_unknown,
    /// Docs: heading of the self-service section.
    docs_self_h,
    /// Docs: top-ups.
    docs_topup_p,
    /// Docs: key replacement.
    docs_rotate_p,
    /// Docs: the emails.
    docs_email_p,
    /// Demo approval page, for a top-up: what approving does.
    demo_approve_hint_topup,
    /// Docs: the rotation example's comment on keeping the Idempotency-Key.
    docs_rotate_keep,
    /// Docs: the rotation example's comment on its answer.
    docs_rotate_after,
}
