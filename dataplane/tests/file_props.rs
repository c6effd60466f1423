//! The same random reads and writes through the ring and through
//! pread/pwrite give the same bytes.

mod common;

use proptest::prelude::*;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    Read { offset: u64, len: usize },
}

fn op() -> impl Strategy<Value = FileOp> {
    prop_oneof![
        (0u64..16384, prop::collection::vec(any::<u8>(), 1..2048))
            .prop_map(|(offset, data)| FileOp::Write { offset, data }),
        (0u64..20000, 1usize..4096).prop_map(|(offset, len)| FileOp::Read { offset, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn ring_and_syscalls_agree(ops in prop::collection::vec(op(), 1..40)) {
        for backend in common::backends() {
            let ring_file = tempfile::tempfile().unwrap();
            let plain_file = tempfile::tempfile().unwrap();
            let fd = ring_file.as_raw_fd();
            let core = common::core(backend);
            let ring_reads = core.block_on({
                let ops = ops.clone();
                async move {
                    let mut reads = Vec::new();
                    for op in ops {
                        match op {
                            FileOp::Write { offset, data } => {
                                let len = data.len();
                                let (res, _) = sigma_dataplane::write_at(fd, data, offset).await;
                                assert_eq!(res.unwrap(), len);
                            }
                            FileOp::Read { offset, len } => {
                                let (res, buf) = sigma_dataplane::read_at(fd, Vec::with_capacity(len), offset).await;
                                let n = res.unwrap();
                                assert_eq!(buf.len(), n);
                                reads.push(buf);
                            }
                        }
                    }
                    reads
                }
            });
            let mut plain_reads = Vec::new();
            for op in &ops {
                match op {
                    FileOp::Write { offset, data } => plain_file.write_all_at(data, *offset).unwrap(),
                    FileOp::Read { offset, len } => {
                        let mut buf = vec![0u8; *len];
                        let n = plain_file.read_at(&mut buf, *offset).unwrap();
                        buf.truncate(n);
                        plain_reads.push(buf);
                    }
                }
            }
            prop_assert_eq!(&ring_reads, &plain_reads, "reads differ on {}", backend);
        }
    }
}
