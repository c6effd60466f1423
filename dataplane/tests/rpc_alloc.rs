//! Once a connection is warm, a light RPC allocates nothing on either side
//! (the rpc-seq-64B pattern: sequential 64-byte calls to a trivial handler).
//!
//! Its own test binary: the counting allocator sees every thread.

mod common;

use bytes::{Bytes, BytesMut};
use sigma_dataplane::net::{TcpListener, TcpStream};
use sigma_dataplane::rpc::{self, Client, ClientConfig, Reply, Service, Status};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Echo;

impl Service for Echo {
    async fn call(&self, _method: u32, request: Bytes, _out: &mut BytesMut) -> Result<Reply, Status> {
        Ok(Reply::Bytes(request))
    }
}

#[test]
fn steady_state_calls_allocate_nothing() {
    for backend in common::backends() {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let core = common::core(backend);
            core.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let stream = listener.accept().await.unwrap();
                rpc::serve(&stream, &Echo).await.unwrap();
            })
        });
        let addr = addr_rx.recv().unwrap();
        let core = common::core(backend);
        let allocations = core.block_on(async move {
            let client = Client::new(TcpStream::connect(addr).await.unwrap(), ClientConfig::default());
            let payload = Bytes::from(vec![7u8; 64]);
            for _ in 0..1000 {
                let reply = client.call(1, payload.clone(), None).await.unwrap();
                assert_eq!(reply.len(), 64);
            }
            let deadline = Some(Duration::from_secs(30));
            for _ in 0..1000 {
                let reply = client.call(1, payload.clone(), deadline).await.unwrap();
                assert_eq!(reply.len(), 64);
            }
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..5000 {
                let reply = client.call(1, payload.clone(), None).await.unwrap();
                assert_eq!(reply.len(), 64);
            }
            COUNTING.store(false, Ordering::SeqCst);
            let without = ALLOCATIONS.swap(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..5000 {
                let reply = client.call(1, payload.clone(), deadline).await.unwrap();
                assert_eq!(reply.len(), 64);
            }
            COUNTING.store(false, Ordering::SeqCst);
            (without, ALLOCATIONS.swap(0, Ordering::SeqCst))
        });
        drop(core);
        server.join().unwrap();
        let (without, with) = allocations;
        assert_eq!(
            without, 0,
            "{backend}: {without} allocations in 5,000 warm calls without a deadline"
        );
        assert_eq!(
            with, 0,
            "{backend}: {with} allocations in 5,000 warm calls with a deadline"
        );
    }
}
