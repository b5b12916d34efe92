//! [`ServiceLinkReporter`]: reports results to the matchmaker over the service link
//! (`transport::service_link`): one `MatchResult` request per attempt, acknowledged by a
//! `MatchResultAck` naming the same match. The link reconnects by itself; an attempt made while
//! it is down fails and [`super::report_until_acked`] retries.

use std::time::Duration;

use futures::future::BoxFuture;
use protocol::tavern::{MatchResultT, ServiceBodyT, ServiceRole};
use tokio_util::sync::CancellationToken;
use transport::service_link::{ClientConfig, ServiceClient};

use super::report::{ReportError, ResultReporter};

/// Reports through a [`ServiceClient`] to the matchmaker.
pub struct ServiceLinkReporter {
    client: ServiceClient,
    /// How long one attempt waits for the acknowledgement.
    timeout: Duration,
}

impl ServiceLinkReporter {
    /// Connects (in the background, reconnecting on loss) to the matchmaker at `addr` as node
    /// `node_id`, authenticated by `service_token`. Pushes from the matchmaker are logged.
    pub fn start(
        addr: &str,
        node_id: &str,
        service_token: &str,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> ServiceLinkReporter {
        let config = ClientConfig::new(addr, node_id, ServiceRole::Instance, service_token);
        let (client, mut pushes) = ServiceClient::start(config, shutdown);
        tokio::spawn(async move {
            while let Some(push) = pushes.recv().await {
                tracing::debug!(cid = push.cid, body = ?push.body.service_body_type(), "matchmaker push ignored");
            }
        });
        ServiceLinkReporter { client, timeout }
    }

    /// Reports over an existing client.
    pub fn new(client: ServiceClient, timeout: Duration) -> ServiceLinkReporter {
        ServiceLinkReporter { client, timeout }
    }
}

impl ResultReporter for ServiceLinkReporter {
    fn report<'a>(&'a self, result: &'a MatchResultT) -> BoxFuture<'a, Result<(), ReportError>> {
        Box::pin(async move {
            let body = ServiceBodyT::MatchResult(Box::new(result.clone()));
            let answer = self
                .client
                .request(body, self.timeout)
                .await
                .map_err(|e| ReportError::Unavailable(e.to_string()))?;
            match answer.body {
                ServiceBodyT::MatchResultAck(ack) if ack.match_id == result.match_id => Ok(()),
                ServiceBodyT::Error(e) => Err(ReportError::Refused { code: e.code, message: e.message }),
                other => Err(ReportError::Unavailable(format!(
                    "unexpected answer {:?} to a match result",
                    other.service_body_type()
                ))),
            }
        })
    }
}
