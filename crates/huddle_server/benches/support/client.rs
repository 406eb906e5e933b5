//! A protocol client for the benches: log in, requests and their answers, events.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use huddle_protocol::{ClientFrame, Reply, Request, ServerEvent, ServerFrame, ServerPayload};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    ws: Ws,
    next_id: u64,
    pub auth_token: String,
}

pub async fn login(addr: SocketAddr, uid: &str) -> Client {
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true)
            .await
            .expect("connect");
    let mut client = Client {
        ws,
        next_id: 0,
        auth_token: String::new(),
    };
    match client
        .request(Request::Login {
            uid: uid.into(),
            auth_token: None,
            name: None,
        })
        .await
    {
        Some(Reply::LoggedIn { auth_token, .. }) => client.auth_token = auth_token,
        other => panic!("login {uid}: {other:?}"),
    }
    client
}

impl Client {
    pub async fn send(&mut self, request: Request) -> u64 {
        self.next_id += 1;
        let frame = ClientFrame {
            v: 1,
            id: Some(self.next_id),
            request,
        };
        let text = serde_json::to_string(&frame).expect("json");
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
        self.next_id
    }

    pub async fn frame(&mut self) -> Option<ServerFrame> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn answer(&mut self, id: u64) -> Option<Reply> {
        loop {
            let frame = self.frame().await?;
            match (frame.re, frame.payload) {
                (Some(re), ServerPayload::Reply(reply)) if re == id => return Some(reply),
                (Some(re), ServerPayload::Error { .. }) if re == id => return None,
                _ => continue,
            }
        }
    }

    pub async fn request(&mut self, request: Request) -> Option<Reply> {
        let id = self.send(request).await;
        self.answer(id).await
    }

    pub async fn event(&mut self, pred: impl Fn(&ServerEvent) -> bool) -> Option<ServerEvent> {
        loop {
            if let ServerPayload::Event(event) = self.frame().await?.payload
                && pred(&event)
            {
                return Some(event);
            }
        }
    }

    pub async fn join(&mut self, session_id: &str) -> Option<()> {
        let auth_token = self.auth_token.clone();
        let token = match self
            .request(Request::GenerateToken {
                session_id: session_id.into(),
                auth_token,
            })
            .await
        {
            Some(Reply::Token { call_token, .. }) => call_token,
            _ => return None,
        };
        match self
            .request(Request::JoinSession {
                session_id: session_id.into(),
                call_token: token,
                idle_timeout_secs: None,
                audio_muted: false,
                video_paused: false,
            })
            .await
        {
            Some(Reply::Joined { .. }) => Some(()),
            _ => None,
        }
    }
}
