//! Typed services: a trait per service, messages as [`sigma_ep::Message`]s
//! (zerocopy structs through [`sigma_ep::Pod`], raw `Bytes`, or anything
//! else that implements `Message`).
//!
//! [`rpc_service!`](crate::rpc_service) declares a service once and derives
//! the three pieces a microservice needs: the trait its handlers implement,
//! a server adapter that dispatches method ids to them, and a client with
//! one async method per RPC.
//!
//! ```
//! use sigma_dataplane::rpc::Status;
//! use sigma_ep::Pod;
//!
//! sigma_dataplane::rpc_service! {
//!     /// Adds numbers.
//!     service Adder, server AdderServer, client AdderClient {
//!         1 => add(Pod<[u64; 2]>) -> Pod<u64>;
//!     }
//! }
//!
//! struct Impl;
//! impl Adder for Impl {
//!     async fn add(&self, req: Pod<[u64; 2]>) -> Result<Pod<u64>, Status> {
//!         Ok(Pod(req.0[0] + req.0[1]))
//!     }
//! }
//! let _server = AdderServer(Impl);
//! ```

use super::{Client, Status, Transport};
use bytes::{Bytes, BytesMut};
use sigma_ep::{Message, StatusCode};
use std::time::Duration;

/// Turns a request that does not decode into a Malformed status.
pub fn decode_request<M: Message>(payload: Bytes) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::new(StatusCode::Malformed, format!("request does not decode: {e}")))
}

/// Calls `method` with a typed request and decodes the typed response.
/// The request is encoded into `scratch`, a reusable buffer.
pub async fn call<T: Transport + 'static, Req: Message, Resp: Message>(
    client: &Client<T>,
    scratch: &std::cell::RefCell<BytesMut>,
    method: u32,
    request: &Req,
    deadline: Option<Duration>,
) -> Result<Resp, Status> {
    let payload = {
        let mut buf = scratch.borrow_mut();
        if buf.capacity() < 4096 {
            buf.reserve(64 * 1024);
        }
        request.encode(&mut buf);
        buf.split().freeze()
    };
    let response = client.call(method, payload, deadline).await?;
    Resp::decode(response).map_err(|e| Status::new(StatusCode::Malformed, format!("response does not decode: {e}")))
}

/// Declares a typed service; see the [module documentation](crate::rpc::typed).
#[macro_export]
macro_rules! rpc_service {
    (
        $(#[$meta:meta])*
        service $service:ident, server $server:ident, client $client:ident {
            $( $id:literal => $method:ident ( $req:ty ) -> $resp:ty ; )*
        }
    ) => {
        $(#[$meta])*
        #[allow(async_fn_in_trait)]
        pub trait $service {
            $(
                #[allow(missing_docs)]
                async fn $method(&self, request: $req) -> ::std::result::Result<$resp, $crate::rpc::Status>;
            )*
        }

        /// Dispatches method ids to the handlers of a
        #[doc = stringify!($service)]
        /// implementation.
        #[derive(Debug)]
        pub struct $server<S>(pub S);

        impl<S: $service> $crate::rpc::Service for $server<S> {
            async fn call(
                &self,
                method: u32,
                request: $crate::__private::bytes::Bytes,
                out: &mut $crate::__private::bytes::BytesMut,
            ) -> ::std::result::Result<$crate::rpc::Reply, $crate::rpc::Status> {
                match method {
                    $(
                        $id => {
                            let request: $req = $crate::rpc::typed::decode_request(request)?;
                            let response: $resp = self.0.$method(request).await?;
                            $crate::__private::sigma_ep::Message::encode(&response, out);
                            Ok($crate::rpc::Reply::Written)
                        }
                    )*
                    other => Err($crate::rpc::Status::unknown_method(other)),
                }
            }
        }

        /// A typed client of
        #[doc = stringify!($service)]
        pub struct $client<T: $crate::rpc::Transport + 'static> {
            client: $crate::rpc::Client<T>,
            scratch: ::std::cell::RefCell<$crate::__private::bytes::BytesMut>,
        }

        impl<T: $crate::rpc::Transport + 'static> ::std::fmt::Debug for $client<T> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($client)).finish()
            }
        }

        impl<T: $crate::rpc::Transport + 'static> $client<T> {
            /// Wraps a connected RPC client.
            pub fn new(client: $crate::rpc::Client<T>) -> Self {
                Self { client, scratch: ::std::cell::RefCell::new($crate::__private::bytes::BytesMut::new()) }
            }

            /// The untyped client underneath.
            pub fn inner(&self) -> &$crate::rpc::Client<T> {
                &self.client
            }

            $(
                #[allow(missing_docs)]
                pub async fn $method(
                    &self,
                    request: &$req,
                    deadline: ::std::option::Option<::std::time::Duration>,
                ) -> ::std::result::Result<$resp, $crate::rpc::Status> {
                    $crate::rpc::typed::call(&self.client, &self.scratch, $id, request, deadline).await
                }
            )*
        }
    };
}
