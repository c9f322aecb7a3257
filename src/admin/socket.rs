//! The admin socket's commands: each [`Request`] the CLI or the console sends is answered here
//! (keys through the operations of [`super`], orders, the outbox, backups, the upstream pool).

use crate::activity::ActivityEvent;
use crate::activity::protocol::{MailView, MailWithheld, Request, Response};
use crate::activity::views::{key_view, key_view_with_history, mail_view, order_view};
use crate::state::AppState;
use crate::store::Write;

use super::{AdminError, NewKey, create_key, find_key, now_ms, revoke_key, rotate_key, top_up_key};

/// A key with its budget history.
async fn show_key(state: &AppState, needle: &str) -> Result<Response, AdminError> {
    let key = find_key(state, needle)?;
    let id = key.id.clone();
    let history = state
        .store
        .read(move |c| crate::store::budget::history(c, &id))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(Response::Key {
        key: key_view_with_history(&key, &history),
    })
}

/// A key's latest ledger rows, or one row by its request id: what an operator answers a
/// customer's question about a charge with (the ledger was only readable with `sqlite3`).
async fn requests(
    state: &AppState,
    key: Option<String>,
    request_id: Option<String>,
    limit: Option<u32>,
) -> Result<Response, AdminError> {
    let rows = match (key, request_id) {
        (_, Some(id)) => {
            let needle = id.trim().to_string();
            let found = if needle.is_empty() || needle.len() > 128 {
                None
            } else {
                state
                    .store
                    .read(move |c| crate::store::usage::by_request_id(c, &needle))
                    .await
                    .map_err(|e| AdminError::Internal(e.to_string()))?
            };
            vec![found.ok_or(AdminError::NoSuchRequest(id))?]
        }
        (Some(needle), None) => {
            let key_id = find_key(state, &needle)?.id.clone();
            let limit = limit.unwrap_or(20).clamp(1, 10_000);
            state
                .store
                .read(move |c| crate::store::usage::recent(c, &key_id, limit))
                .await
                .map_err(|e| AdminError::Internal(e.to_string()))?
        }
        (None, None) => {
            return Err(AdminError::Internal(
                "give a key (or its id or prefix) or a request id".into(),
            ));
        }
    };
    Ok(Response::Requests { requests: rows })
}

/// Queue a message of the outbox again.
async fn retry_mail(state: &AppState, id: i64) -> Result<Response, AdminError> {
    let mail = requeue(state, id).await?;
    state.mailer.poke();
    if !state.mailer.enabled() {
        tracing::warn!(
            id,
            "mail queued again, but email is off ([email] smtp_url): it waits"
        );
    }
    Ok(Response::MailRetried {
        mail,
        sending: state.mailer.enabled(),
    })
}

/// Queue every failed message again but the balance notices that must not go — after the
/// operator mended what failed them all (a server, an account or a `from` address refused for
/// a while: see `mail::outbox`), one command instead of one per message.
async fn retry_failed_mail(state: &AppState) -> Result<Response, AdminError> {
    use futures_util::StreamExt;
    let (mut queued, mut withheld) = (Vec::new(), Vec::new());
    // Page by page, by number: every failed message, however many (a first version stopped at
    // 10 000 and said nothing of the rest; found by a re-check).
    let mut after = 0;
    loop {
        let ids = state
            .store
            .read(move |c| crate::store::mail::failed_ids(c, after, 1_000))
            .await
            .map_err(|e| AdminError::Internal(e.to_string()))?;
        let Some(&last) = ids.last() else { break };
        after = last;
        // A few at a time: their writes share commits.
        let outcomes: Vec<(i64, Result<MailView, AdminError>)> = futures_util::stream::iter(ids)
            .map(|id| async move { (id, requeue(state, id).await) })
            .buffered(32)
            .collect()
            .await;
        for (id, outcome) in outcomes {
            match outcome {
                Ok(mail) => queued.push(mail),
                Err(AdminError::MailWithheld(why)) => withheld.push(MailWithheld { id, why }),
                // Sent or gone meanwhile (a retry of its own): nothing to do.
                Err(AdminError::NoSuchMail(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    state.mailer.poke();
    tracing::info!(
        queued = queued.len(),
        withheld = withheld.len(),
        sending = state.mailer.enabled(),
        "failed mail queued again"
    );
    Ok(Response::MailRetriedFailed {
        queued,
        withheld,
        sending: state.mailer.enabled(),
    })
}

/// Queue message `id` again and tell the console; its view as it is now.
async fn requeue(state: &AppState, id: i64) -> Result<MailView, AdminError> {
    match state
        .store
        .write(Write::MailRetry {
            id,
            at_ms: now_ms(),
        })
        .await
    {
        Ok(()) => {}
        // Either no such message waiting or failed, or a balance notice that must not go (its
        // owner opted out, its key revoked): said as such, not as a missing message.
        Err(crate::store::StoreError::Conflict(why)) => {
            let row = state
                .store
                .read(move |c| crate::store::mail::get(c, id))
                .await
                .ok()
                .flatten();
            return Err(match row {
                Some(r) if r.status != crate::kinds::MailStatus::Sent => {
                    AdminError::MailWithheld(why)
                }
                _ => AdminError::NoSuchMail(id),
            });
        }
        Err(e) => return Err(AdminError::Internal(e.to_string())),
    }
    let row = state
        .store
        .read(move |c| crate::store::mail::get(c, id))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .ok_or(AdminError::NoSuchMail(id))?;
    let mail = mail_view(&row);
    state.activity.emit(ActivityEvent::MailChanged {
        mail: mail.clone(),
        at_ms: now_ms(),
    });
    Ok(mail)
}

/// Answer a self-service command of the admin socket (rotation, the outbox).
async fn self_service_command(state: &AppState, req: Request) -> Result<Response, AdminError> {
    match req {
        Request::KeysRotate { key } => {
            rotate_key(state, &key, None, None)
                .await
                .map(|(k, api_key)| Response::Rotated {
                    key: key_view(&k),
                    api_key,
                })
        }
        Request::MailList { limit } => {
            let limit = limit.unwrap_or(100).clamp(1, 10_000);
            state
                .store
                .read(move |c| crate::store::mail::list(c, limit))
                .await
                .map(|rows| Response::Mail {
                    mail: rows.iter().map(mail_view).collect(),
                    sending: state.mailer.enabled(),
                })
                .map_err(|e| AdminError::Internal(e.to_string()))
        }
        Request::MailRetry { id } => retry_mail(state, id).await,
        Request::MailRetryFailed => retry_failed_mail(state).await,
        other => Err(AdminError::Internal(format!(
            "{other:?} is not a self-service command"
        ))),
    }
}

/// Back the database up to `path` (absolute; see [`crate::store::Store::backup`]).
pub async fn backup(state: &AppState, path: std::path::PathBuf) -> Result<Response, AdminError> {
    if !path.is_absolute() {
        return Err(AdminError::Internal(format!(
            "backup path {} must be absolute (the daemon's working directory is not yours)",
            path.display()
        )));
    }
    let started = std::time::Instant::now();
    match state.store.backup(&path).await {
        Ok(crate::store::Backup { bytes, behind }) => {
            tracing::info!(path = %path.display(), bytes, behind, ms = started.elapsed().as_millis() as u64, "database backed up");
            Ok(Response::BackedUp {
                path,
                bytes,
                behind,
            })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "backup failed");
            Err(AdminError::Internal(e.to_string()))
        }
    }
}

/// The pool, as `upstream_status` answers it.
fn upstream_answer(state: &AppState) -> Response {
    Response::Upstream {
        upstream: Box::new(crate::activity::upstream_view::upstream_view(state)),
    }
}

/// The operator turns an upstream account on or off.
async fn set_upstream(state: &AppState, name: &str, enabled: bool) -> Result<Response, AdminError> {
    let _one_at_a_time = state.upstream_lock.lock().await;
    let Some(account) = state.upstream.set_enabled(name, enabled) else {
        return Err(AdminError::NoSuchAccount(name.to_string()));
    };
    // Kept across restarts: an account the operator took out stays out until enabled (it was
    // back in service after the next start).
    state
        .store
        .write(Write::AccountDisabled {
            name: name.to_string(),
            key_sha256: account.key_sha256.clone(),
            disabled: !enabled,
            at_ms: now_ms(),
        })
        .await
        .map_err(|e| {
            AdminError::Internal(format!(
                "the account is {} until the daemon restarts, but that could not be recorded: {e}",
                if enabled { "enabled" } else { "disabled" }
            ))
        })?;
    Ok(upstream_answer(state))
}

/// At start: the accounts the operator disabled stay disabled (a name no longer in the config
/// is kept in the database, and applies again if the account comes back under that name with
/// the same key). An account under that name with another key is not the one disabled: it
/// serves, and the flag is dropped.
pub async fn restore_disabled_accounts(state: &AppState) {
    let flags = match state.store.read(crate::store::accounts::disabled).await {
        Ok(flags) => flags,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the disabled upstream accounts");
            return;
        }
    };
    let _one_at_a_time = state.upstream_lock.lock().await;
    for flag in flags {
        let name = flag.name;
        let current = state.upstream.account(&name).map(|a| a.key_sha256.clone());
        if let (Some(was), Some(current)) = (&flag.key_sha256, &current)
            && was != current
        {
            tracing::warn!(
                account = %name,
                "upstream account was disabled by the operator with another DeepSeek key; its \
                 key has changed since, so it is in service"
            );
            let cleared = state.store.write(Write::AccountDisabled {
                name: name.clone(),
                key_sha256: current.clone(),
                disabled: false,
                at_ms: now_ms(),
            });
            if let Err(e) = cleared.await {
                tracing::error!(account = %name, error = %e, "cannot clear the disabled flag");
            }
            continue;
        }
        // A flag recorded before fingerprints were (migration 15) takes the key the account
        // has now: from here on, a new key under that name brings it back too.
        if let (None, Some(current)) = (&flag.key_sha256, &current) {
            let fingerprinted = state.store.write(Write::AccountDisabled {
                name: name.clone(),
                key_sha256: current.clone(),
                disabled: true,
                at_ms: now_ms(),
            });
            if let Err(e) = fingerprinted.await {
                tracing::warn!(account = %name, error = %e, "cannot record the disabled account's key");
            }
        }
        if state.upstream.set_enabled(&name, false).is_some() {
            tracing::warn!(
                account = %name,
                "upstream account stays disabled by the operator (`modelrelay upstream enable {name}`)"
            );
        } else {
            // Renamed or removed from the config since: said, since an account given that
            // name again with the same key would start disabled.
            tracing::warn!(
                account = %name,
                "an upstream account the operator disabled is no longer configured; an account \
                 given this name again with the same DeepSeek key starts disabled"
            );
        }
    }
    let pool = state.upstream.status();
    if !pool.accounts.is_empty() && pool.accounts.iter().all(|a| a.by_operator) {
        tracing::error!(
            "every upstream account is disabled by the operator: no request can be served until \
             one is enabled (`modelrelay upstream enable NAME`)"
        );
    }
}

/// Answer one admin-socket command (`subscribe` is handled by the socket itself).
pub async fn handle_admin(state: &AppState, req: Request) -> Response {
    let result = match req {
        Request::Ping => Ok(Response::Pong {
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        Request::KeysList => Ok(Response::Keys {
            keys: state.keys.all().iter().map(|k| key_view(k)).collect(),
        }),
        Request::KeysShow { key } => show_key(state, &key).await,
        Request::KeysCreate {
            plan,
            email,
            budget_usd,
            note,
        } => create_key(
            state,
            NewKey {
                plan,
                email,
                budget: budget_usd,
                note,
                order_id: None,
            },
        )
        .await
        .map(|(k, api_key)| Response::Created {
            key: key_view(&k),
            api_key,
        }),
        Request::KeysRevoke { key } => revoke_key(state, &key)
            .await
            .map(|k| Response::Key { key: key_view(&k) }),
        Request::KeysTopup { key, usd } => top_up_key(state, &key, usd)
            .await
            .map(|k| Response::Key { key: key_view(&k) }),
        Request::OrdersList { limit } => {
            let limit = limit.unwrap_or(100).clamp(1, 10_000);
            state
                .store
                .read(move |c| crate::store::orders::recent_full(c, limit))
                .await
                .map(|orders| Response::Orders {
                    orders: orders.iter().map(order_view).collect(),
                })
                .map_err(|e| AdminError::Internal(e.to_string()))
        }
        Request::OrdersShow { order_id } => {
            let id = order_id.trim().to_string();
            let found = if id.is_empty() || id.len() > 64 {
                Ok(None)
            } else {
                state
                    .store
                    .read(move |c| crate::store::orders::get_full(c, &id))
                    .await
            };
            match found {
                Ok(Some(o)) => Ok(Response::Order {
                    order: order_view(&o),
                }),
                Ok(None) => Err(AdminError::NoSuchOrder(order_id)),
                Err(e) => Err(AdminError::Internal(e.to_string())),
            }
        }
        Request::Subscribe => Ok(Response::Subscribed),
        Request::Backup { path } => backup(state, path).await,
        Request::Requests {
            key,
            request_id,
            limit,
        } => requests(state, key, request_id, limit).await,
        Request::UpstreamStatus => Ok(upstream_answer(state)),
        Request::UpstreamEnable { name } => set_upstream(state, &name, true).await,
        Request::UpstreamDisable { name } => set_upstream(state, &name, false).await,
        other => self_service_command(state, other).await,
    };
    result.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}
