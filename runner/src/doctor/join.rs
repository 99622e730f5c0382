//! The last step of `doctor --url`: join the runner's channel as `connect`
//! does, then leave and close cleanly.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::connection::{STEP_TIMEOUT, StepFailure, Ws};
use super::report::EXIT_REFUSED;
use crate::control::JoinInfo;
use crate::control::frame::{self, Empty, Head};
use crate::control::in_frame::{IncomingFrame, PhxReply};

/// How long leaving may take once joined; it decides nothing.
const LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Joins the runner's topic, then leaves and closes as `connect` does when
/// it stops.
pub(super) async fn join_and_leave(
    mut ws: Ws,
    topic: &str,
    join: &JoinInfo,
) -> Result<((), String), StepFailure> {
    let text = frame::text_of(
        Head::new(Some("1"), Some("1"), topic, "phx_join"),
        join,
        256,
    );
    if let Err(err) = ws.send(Message::text(text)).await {
        return Err(StepFailure::network(
            format!("cannot send the join: {err}"),
            "the connection dropped right after the upgrade: check Kandan's logs",
        ));
    }
    let reply = match tokio::time::timeout(STEP_TIMEOUT, reply_to(&mut ws, topic, "1")).await {
        Ok(reply) => reply,
        Err(_) => Err(StepFailure::network(
            format!(
                "no reply to the join of {topic} within {} s",
                STEP_TIMEOUT.as_secs()
            ),
            "Kandan accepted the socket but does not answer on it: check Kandan's logs",
        )),
    }?;
    if let Err(reason) = reply {
        return Err(StepFailure {
            detail: format!("Kandan refused the join of {topic}: {reason}"),
            fix: Some(
                "check --runner-id (the channel is runner:<id>): the token may belong to another runner"
                    .to_owned(),
            ),
            exit: EXIT_REFUSED,
        });
    }
    let leave = frame::text_of(
        Head::new(Some("1"), Some("2"), topic, "phx_leave"),
        &Empty {},
        64,
    );
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, async {
        if ws.send(Message::text(leave)).await.is_ok() {
            let _ = reply_to(&mut ws, topic, "2").await;
        }
        let _ = ws.close(None).await;
        // Until Kandan's close frame: a clean closing handshake.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(((), format!("joined {topic} (and left)")))
}

/// Waits for the `phx_reply` to `msg_ref` on `topic`: `Ok(Ok)` when it says
/// ok, `Ok(Err(reason))` when it is an error reply.
async fn reply_to(
    ws: &mut Ws,
    topic: &str,
    msg_ref: &str,
) -> Result<Result<(), String>, StepFailure> {
    while let Some(message) = ws.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(close)) => {
                let why = close.map_or_else(String::new, |close| {
                    format!(" (code {}, {})", u16::from(close.code), close.reason)
                });
                return Err(StepFailure::network(
                    format!("Kandan closed the connection before replying{why}"),
                    "check Kandan's logs for why it closed the runner socket",
                ));
            }
            Ok(_) => continue,
            Err(err) => {
                return Err(StepFailure::network(
                    format!("the connection failed: {err}"),
                    "check the network path and Kandan's logs",
                ));
            }
        };
        // Anything else (a control pushed at once) is not this step's business.
        let Ok(incoming) = IncomingFrame::parse(text.as_str()) else {
            continue;
        };
        if incoming.event() != "phx_reply"
            || incoming.topic() != topic
            || incoming.msg_ref() != Some(msg_ref)
        {
            continue;
        }
        let reply = PhxReply::read(incoming.payload());
        return Ok(if reply.ok() {
            Ok(())
        } else {
            Err(reply.reason())
        });
    }
    Err(StepFailure::network(
        "the connection ended before the reply",
        "check Kandan's logs for why it closed the runner socket",
    ))
}
