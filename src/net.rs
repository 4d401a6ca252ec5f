//! The node's ZeroMQ endpoint. Binding it at start makes a taken port a start
//! failure that names the port, rather than a surprise when the first remote
//! task arrives.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "network.zmq_port {port} is already in use on this host: stop what holds it or choose another port (CHI_ZMQ_PORT)"
    )]
    PortInUse { port: u16 },
    #[error("cannot bind the ZeroMQ socket on port {port}: {source}")]
    Bind { port: u16, source: zmq::Error },
    #[error("cannot create a ZeroMQ socket: {0}")]
    Socket(zmq::Error),
}

/// The bound endpoint; dropping it closes the socket without lingering.
pub struct Endpoint {
    pub port: u16,
    socket: zmq::Socket,
    _ctx: zmq::Context,
}

impl Endpoint {
    pub fn bind(port: u16) -> Result<Endpoint, NetError> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::ROUTER).map_err(NetError::Socket)?;
        socket.set_linger(0).map_err(NetError::Socket)?;
        socket
            .bind(&format!("tcp://*:{port}"))
            .map_err(|e| match e {
                zmq::Error::EADDRINUSE => NetError::PortInUse { port },
                source => NetError::Bind { port, source },
            })?;
        Ok(Endpoint {
            port,
            socket,
            _ctx: ctx,
        })
    }

    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }
}
