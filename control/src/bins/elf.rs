//! The static-executable check: the ELF header and program headers, parsed
//! here by hand (64-bit little-endian x86_64 and aarch64 only).
//!
//! A proc runs in a jail that holds only its binary, so it must be a static
//! executable: `ET_EXEC`, or `ET_DYN` without `PT_INTERP` (a static-pie, what
//! `-C target-feature=+crt-static` and `gcc -static-pie` produce). A
//! `PT_INTERP` means a dynamic loader and shared libraries, which the jail
//! does not have. With the whole file (at put time) the check also reads the
//! dynamic section of an `ET_DYN`: `DT_NEEDED` means shared libraries, and a
//! file without `DF_1_PIE` is a shared library rather than an executable.
//!
//! The input is untrusted: every offset and count is checked before use and
//! every failure is an error, never a panic (a property test feeds random
//! bytes and truncations).

use super::limits::{ELF_DYNAMIC_ENTRIES_MAX, ELF_HEADERS_BYTES_MAX, ELF_PROGRAM_HEADERS_MAX};

const EHDR_BYTES: usize = 64;
const PHDR_BYTES: usize = 56;
const DYN_BYTES: usize = 16;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_FLAGS_1: i64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

/// The kind of static executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfKind {
    /// `ET_EXEC`: linked at a fixed address.
    Exec,
    /// `ET_DYN` without an interpreter: a static position-independent
    /// executable.
    StaticPie,
}

/// The target machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86-64.
    X86_64,
    /// AArch64.
    Aarch64,
}

/// What the check found in a static executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// Fixed-address or position-independent.
    pub kind: ElfKind,
    /// The target machine.
    pub machine: Machine,
}

/// Why a file is not a static executable, in words for an error message.
pub type Why = String;

/// Checks from a prefix of the file (at least [`ELF_HEADERS_BYTES_MAX`]
/// bytes, or the whole file if shorter): the ELF header and the program
/// headers. What a fetch checks as the bytes stream in.
pub fn check_headers(prefix: &[u8]) -> Result<ElfInfo, Why> {
    let (info, _) = parse(prefix)?;
    Ok(info)
}

/// Checks the whole file: the headers, and for a static-pie its dynamic
/// section too. What a put checks.
pub fn check_file(file: &[u8]) -> Result<ElfInfo, Why> {
    let (info, dynamic) = parse(file)?;
    if info.kind == ElfKind::StaticPie {
        let (offset, bytes) = dynamic.ok_or("ET_DYN without PT_DYNAMIC: not a position-independent executable")?;
        check_dynamic(file, offset, bytes)?;
    }
    Ok(info)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The headers; for a static-pie also where its dynamic section is.
#[allow(clippy::type_complexity)]
fn parse(b: &[u8]) -> Result<(ElfInfo, Option<(u64, u64)>), Why> {
    if b.len() < 4 || &b[..4] != b"\x7fELF" {
        return Err("not an ELF file (no \\x7fELF magic)".into());
    }
    if b.len() < EHDR_BYTES {
        return Err(format!("truncated ELF header ({} of {EHDR_BYTES} bytes)", b.len()));
    }
    if b[4] != 2 {
        return Err(format!("ELF class {} is not ELFCLASS64", b[4]));
    }
    if b[5] != 1 {
        return Err(format!("ELF data encoding {} is not little-endian", b[5]));
    }
    if b[6] != 1 {
        return Err(format!("ELF identification version {} is not 1", b[6]));
    }
    let truncated = || Why::from("truncated ELF header");
    let e_type = u16_at(b, 16).ok_or_else(truncated)?;
    let e_machine = u16_at(b, 18).ok_or_else(truncated)?;
    let e_entry = u64_at(b, 24).ok_or_else(truncated)?;
    let e_phoff = u64_at(b, 32).ok_or_else(truncated)?;
    let e_phentsize = u16_at(b, 54).ok_or_else(truncated)?;
    let e_phnum = u16_at(b, 56).ok_or_else(truncated)?;
    let machine = match e_machine {
        EM_X86_64 => Machine::X86_64,
        EM_AARCH64 => Machine::Aarch64,
        other => return Err(format!("machine {other} is neither x86_64 (62) nor aarch64 (183)")),
    };
    let kind = match e_type {
        ET_EXEC => ElfKind::Exec,
        ET_DYN => ElfKind::StaticPie,
        1 => return Err("a relocatable object (ET_REL), not an executable".into()),
        4 => return Err("a core dump (ET_CORE), not an executable".into()),
        other => return Err(format!("ELF type {other} is not an executable")),
    };
    if e_entry == 0 {
        return Err("no entry point".into());
    }
    if usize::from(e_phentsize) != PHDR_BYTES {
        return Err(format!("program header size {e_phentsize}, not {PHDR_BYTES}"));
    }
    let phnum = usize::from(e_phnum);
    if phnum == 0 {
        return Err("no program headers".into());
    }
    if phnum > ELF_PROGRAM_HEADERS_MAX {
        return Err(format!(
            "{phnum} program headers, at most {ELF_PROGRAM_HEADERS_MAX} are accepted"
        ));
    }
    // phnum * 56 cannot overflow (phnum <= 256).
    let ph_end = e_phoff
        .checked_add((phnum * PHDR_BYTES) as u64)
        .ok_or("program header offset overflows")?;
    if ph_end > ELF_HEADERS_BYTES_MAX as u64 {
        return Err(format!(
            "program headers end at byte {ph_end}, beyond the first {ELF_HEADERS_BYTES_MAX} bytes where they are looked for"
        ));
    }
    if ph_end > b.len() as u64 {
        return Err(format!(
            "truncated: program headers end at byte {ph_end}, the file has {}",
            b.len()
        ));
    }
    let phoff = e_phoff as usize;
    let mut loads = 0;
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = phoff + i * PHDR_BYTES;
        let p_type = u32_at(b, ph).ok_or_else(truncated)?;
        match p_type {
            PT_INTERP => {
                return Err(
                    "dynamically linked (it has a PT_INTERP program header naming a loader); \
                            build it static (-C target-feature=+crt-static, or gcc -static)"
                        .into(),
                )
            }
            PT_LOAD => loads += 1,
            PT_DYNAMIC => {
                let offset = u64_at(b, ph + 8).ok_or_else(truncated)?;
                let bytes = u64_at(b, ph + 32).ok_or_else(truncated)?;
                dynamic = Some((offset, bytes));
            }
            _ => {}
        }
    }
    if loads == 0 {
        return Err("no PT_LOAD segment".into());
    }
    Ok((ElfInfo { kind, machine }, dynamic))
}

/// The dynamic section of a static-pie: no `DT_NEEDED`, and `DF_1_PIE` set.
fn check_dynamic(b: &[u8], offset: u64, bytes: u64) -> Result<(), Why> {
    let end = offset.checked_add(bytes).ok_or("dynamic section offset overflows")?;
    if end > b.len() as u64 {
        return Err(format!(
            "truncated: the dynamic section ends at byte {end}, the file has {}",
            b.len()
        ));
    }
    let entries = (bytes as usize) / DYN_BYTES;
    if entries > ELF_DYNAMIC_ENTRIES_MAX {
        return Err(format!(
            "{entries} dynamic entries, at most {ELF_DYNAMIC_ENTRIES_MAX} are accepted"
        ));
    }
    let mut pie = false;
    for i in 0..entries {
        let at = offset as usize + i * DYN_BYTES;
        let truncated = || Why::from("truncated dynamic section");
        let tag = u64_at(b, at).ok_or_else(truncated)? as i64;
        let val = u64_at(b, at + 8).ok_or_else(truncated)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => {
                return Err("dynamically linked (it needs shared libraries: DT_NEEDED); \
                            build it static (-C target-feature=+crt-static, or gcc -static)"
                    .into())
            }
            DT_FLAGS_1 => pie = val & DF_1_PIE != 0,
            _ => {}
        }
    }
    if !pie {
        return Err("a shared library (ET_DYN without DF_1_PIE), not an executable".into());
    }
    Ok(())
}

/// A minimal static x86_64 executable for tests: an ELF header and one
/// `PT_LOAD`, then `fill` bytes up to `len` (at least 120).
#[cfg(test)]
pub(crate) fn minimal_static(len: usize, fill: u8) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    (b[4], b[5], b[6]) = (2, 1, 1);
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    b[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let mut load = [0u8; 56];
    load[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&load);
    b.resize(len, fill);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: header, `phdrs` program headers at 64, then `tail`.
    fn elf(e_type: u16, phdrs: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(p_type, offset, filesz) in phdrs {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b.extend_from_slice(tail);
        b
    }

    fn dynamic(entries: &[(i64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect()
    }

    #[test]
    fn exec_accepted_interp_refused() {
        let exec = elf(ET_EXEC, &[(PT_LOAD, 0, 0)], &[]);
        assert_eq!(check_file(&exec).unwrap().kind, ElfKind::Exec);
        let dynamic_exec = elf(ET_EXEC, &[(PT_INTERP, 0, 0), (PT_LOAD, 0, 0)], &[]);
        let e = check_file(&dynamic_exec).unwrap_err();
        assert!(e.contains("PT_INTERP"), "{e}");
    }

    #[test]
    fn static_pie_needs_pie_flag_and_no_needed() {
        let dyn_at = 64 + 2 * 56;
        let pie = elf(
            ET_DYN,
            &[(PT_LOAD, 0, 0), (PT_DYNAMIC, dyn_at, 48)],
            &dynamic(&[(DT_FLAGS_1, DF_1_PIE), (DT_NULL, 0), (0, 0)]),
        );
        assert_eq!(check_file(&pie).unwrap().kind, ElfKind::StaticPie);
        let lib = elf(
            ET_DYN,
            &[(PT_LOAD, 0, 0), (PT_DYNAMIC, dyn_at, 32)],
            &dynamic(&[(DT_FLAGS_1, 0), (DT_NULL, 0)]),
        );
        assert!(check_file(&lib).unwrap_err().contains("shared library"));
        let needs = elf(
            ET_DYN,
            &[(PT_LOAD, 0, 0), (PT_DYNAMIC, dyn_at, 32)],
            &dynamic(&[(DT_NEEDED, 1), (DT_FLAGS_1, DF_1_PIE)]),
        );
        assert!(check_file(&needs).unwrap_err().contains("DT_NEEDED"));
        // The headers alone pass: the dynamic section is the put's check.
        assert!(check_headers(&needs).is_ok());
        let truncated = &pie[..pie.len() - 20];
        assert!(check_file(truncated).unwrap_err().contains("truncated"));
    }

    #[test]
    fn refusals_say_why() {
        assert!(check_file(b"#!/bin/sh\necho hi\n").unwrap_err().contains("not an ELF"));
        assert!(check_file(b"\x7fELF").unwrap_err().contains("truncated"));
        let mut e32 = elf(ET_EXEC, &[(PT_LOAD, 0, 0)], &[]);
        e32[4] = 1;
        assert!(check_file(&e32).unwrap_err().contains("ELFCLASS64"));
        let mut arm32 = elf(ET_EXEC, &[(PT_LOAD, 0, 0)], &[]);
        arm32[18] = 40;
        assert!(check_file(&arm32).unwrap_err().contains("machine 40"));
        let mut far = elf(ET_EXEC, &[(PT_LOAD, 0, 0)], &[]);
        far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_file(&far).unwrap_err().contains("overflows"));
        let no_load = elf(ET_EXEC, &[(6, 0, 0)], &[]);
        assert!(check_file(&no_load).unwrap_err().contains("PT_LOAD"));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = check_file(&bytes);
            let _ = check_headers(&bytes);
        }

        #[test]
        fn mutated_and_truncated_elves_never_panic(
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
        ) {
            let dyn_at = 64 + 3 * 56;
            let mut b = elf(
                ET_DYN,
                &[(PT_LOAD, 0, 0), (PT_DYNAMIC, dyn_at, 48), (PT_INTERP, 0, 0)],
                &dynamic(&[(DT_NEEDED, 1), (DT_FLAGS_1, DF_1_PIE), (DT_NULL, 0)]),
            );
            for (at, v) in flips {
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            b.truncate(cut);
            let _ = check_file(&b);
            let _ = check_headers(&b);
        }
    }
}
