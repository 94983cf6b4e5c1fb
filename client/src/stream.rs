//! [`ScoreStream`]: one open bidirectional ScoreStream call. Requests go out with ids chosen
//! by the caller and answers come back as they are ready, each with its id; a request that
//! fails does not end the stream.

use imagesearch_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::{convert, Client, ClientError, ServerTimings};

/// An open ScoreStream: send requests with ids, receive answers as they come.
pub struct ScoreStream {
    tx: mpsc::Sender<pb::ScoreStreamRequest>,
    rx: tonic::Streaming<pb::ScoreStreamResponse>,
    outstanding: usize,
}

impl ScoreStream {
    /// Opens a stream (the channel to the server holds at most `buffer` unsent requests).
    pub async fn open(client: &Client, buffer: usize) -> Result<Self, ClientError> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let mut c = client.search_client();
        let resp = c.score_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
        Ok(ScoreStream { tx, rx: resp.into_inner(), outstanding: 0 })
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.outstanding
    }

    /// Sends one request under the caller's id (echoed on its answer).
    pub async fn send(&mut self, request_id: u64, request: pb::ScoreRequest) -> Result<(), ClientError> {
        self.tx
            .send(pb::ScoreStreamRequest { request_id, request: Some(request) })
            .await
            .map_err(|_| ClientError::Status(Status::unavailable("score stream closed by the server")))?;
        self.outstanding += 1;
        Ok(())
    }

    /// The next answer: its request id and the scores, or the error of that one request. An
    /// error here (not inside the pair) means the stream itself ended.
    pub async fn recv(&mut self) -> Result<(u64, Result<(pb::ScoreResponse, ServerTimings), ClientError>), ClientError> {
        let msg = self.rx.message().await?.ok_or_else(|| ClientError::Status(Status::unavailable("score stream ended")))?;
        self.outstanding = self.outstanding.saturating_sub(1);
        Ok(convert::stream_answer(msg))
    }
}
