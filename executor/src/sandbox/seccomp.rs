//! The seccomp filter of sandboxed processes: Docker's default profile, written as a denylist.
//!
//! This module owns building that filter ([`SeccompProgram::docker_default`]) and installing it
//! in a freshly cloned child ([`SeccompProgram::install`], async-signal-safe). It does not set
//! `no_new_privs`; the sandbox does that before installing.
//!
//! # What the filter does
//!
//! Docker's profile is an allowlist; this filter denies what that allowlist leaves out for a
//! container with Docker's default capabilities (the syscalls Docker only allows with
//! `CAP_SYS_ADMIN`, `CAP_SYS_MODULE`, `CAP_SYS_PTRACE`, `CAP_SYS_TIME`, … are denied outright)
//! and allows the rest. One deliberate difference: `ptrace` is denied, where Docker allows it on
//! kernels from 4.8 on (so `strace` and `gdb` do not work in a `RUN`).
//!
//! * the syscalls in `DENIED` fail with `EPERM`: module loading, kexec, reboot, swap, clock
//!   setting, accounting, quotas, keyrings, `bpf`, `perf_event_open`, `ptrace` and cross-process
//!   memory access (`process_vm_*`, `kcmp`, `pidfd_getfd`, `process_madvise`), NUMA policy,
//!   `userfaultfd`, `io_uring_*`, namespaces (`unshare`, `setns`), every way of mounting (`mount`,
//!   `umount2`, `pivot_root` and the new mount API), file handles (`open_by_handle_at`), `syslog`,
//!   `vhangup`, `fanotify_init`, and the obsolete ones (`uselib`, `ustat`, `sysfs`, `_sysctl`,
//!   `nfsservctl`, `create_module`, `get_kernel_syms`, `query_module`);
//! * `personality` fails with `EPERM` unless its argument is one Docker allows: `0x0`
//!   (`PER_LINUX`), `0x8` (`PER_LINUX32`), `0x20000` (`UNAME26`), `0x20008`
//!   (`PER_LINUX32|UNAME26`) and `0xffffffff` (the query);
//! * `clone` fails with `EPERM` when its flags (the first argument on x86_64 and aarch64) ask for a
//!   new namespace (`CLONE_NEWNS`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
//!   `CLONE_NEWNET`, `CLONE_NEWCGROUP`); only the low 32 bits count, as in the kernel;
//! * `clone3` fails with `ENOSYS`, as in Docker: its flags sit in memory where seccomp cannot
//!   look, and `ENOSYS` makes glibc and musl fall back to `clone`, which the filter can check.
//!
//! # Other architectures and ABIs
//!
//! A seccomp filter sees every syscall with the audit architecture of the ABI it came through.
//! `seccompiler` starts every program it generates with a check of that architecture and returns
//! `SECCOMP_RET_KILL_PROCESS` on a mismatch, so a 32-bit syscall (i386 `int 0x80` on x86_64, an
//! AArch32 task on aarch64) kills the whole process with `SIGSYS`: 32-bit binaries cannot run in
//! the sandbox (Docker's profile lists i386 and x32 numbers and lets them run). The x32 ABI,
//! though, reports `AUDIT_ARCH_X86_64` with bit 30 (`__X32_SYSCALL_BIT`) set in the syscall number,
//! which `seccompiler` does not check: this module puts a hand-written prelude in front of
//! `seccompiler`'s program that, after its own architecture check, fails every syscall number with
//! that bit (or any higher one) with `ENOSYS` — what a kernel built without x32 answers — so x32
//! calls cannot slip past the denylist's native numbers. The same prelude answers `clone3`.
//!
//! The verdict of every syscall without argument checks depends only on the architecture and the
//! number, so the kernel's seccomp action cache (5.11+) lets allowed syscalls skip the filter.

#![allow(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// Syscalls that fail with `EPERM` whatever their arguments, by name (for messages and tests)
/// and number on the running architecture. Names an architecture lacks are left out.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    #[cfg(target_arch = "x86_64")]
    ("create_module", X86_64_SYS_CREATE_MODULE),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    #[cfg(target_arch = "x86_64")]
    ("get_kernel_syms", X86_64_SYS_GET_KERNEL_SYMS),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    ("kcmp", libc::SYS_kcmp),
    #[cfg(target_arch = "x86_64")]
    ("kexec_file_load", libc::SYS_kexec_file_load),
    #[cfg(target_arch = "aarch64")]
    ("kexec_file_load", AARCH64_SYS_KEXEC_FILE_LOAD),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mbind", libc::SYS_mbind),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("move_pages", libc::SYS_move_pages),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_madvise", libc::SYS_process_madvise),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    #[cfg(target_arch = "x86_64")]
    ("query_module", X86_64_SYS_QUERY_MODULE),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    ("vhangup", libc::SYS_vhangup),
];

/// No table for other architectures: [`SeccompProgram::docker_default`] refuses them.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DENIED: &[(&str, libc::c_long)] = &[];

/// The `personality` arguments Docker allows: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32|UNAME26` and `0xffffffff` (query the current persona).
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `clone` flags that create namespaces; `clone` with any of them fails with `EPERM`.
const CLONE_NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

// x86_64 numbers of removed syscalls the libc crate no longer names (the kernel answers ENOSYS;
// Docker's profile denies them by name).
#[cfg(target_arch = "x86_64")]
const X86_64_SYS_CREATE_MODULE: libc::c_long = 174;
#[cfg(target_arch = "x86_64")]
const X86_64_SYS_GET_KERNEL_SYMS: libc::c_long = 177;
#[cfg(target_arch = "x86_64")]
const X86_64_SYS_QUERY_MODULE: libc::c_long = 178;
// asm-generic's number; the libc crate names it for glibc but not for musl.
#[cfg(target_arch = "aarch64")]
const AARCH64_SYS_KEXEC_FILE_LOAD: libc::c_long = 294;

/// `AUDIT_ARCH_*` of the architecture the filter is built for (`<linux/audit.h>`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 183 | 0x8000_0000 | 0x4000_0000;
/// Never used: [`SeccompProgram::docker_default`] refuses other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH_NATIVE: u32 = 0;

/// `__X32_SYSCALL_BIT`: x32 syscalls arrive as `AUDIT_ARCH_X86_64` with this bit in `nr`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's limit on a classic BPF program's length (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

// Classic BPF opcodes (`<linux/bpf_common.h>`) and `struct seccomp_data` offsets.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
#[cfg(target_arch = "x86_64")]
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The running architecture has no syscall table here (only x86_64 and aarch64 do).
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(&'static str),
    /// `seccompiler` rejected the filter.
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The compiled program is longer than the kernel accepts.
    #[error("the seccomp filter has {0} instructions; the kernel accepts at most {BPF_MAXINSNS}")]
    TooLarge(usize),
}

/// A compiled BPF filter ready to install.
pub struct SeccompProgram {
    /// The instructions; never empty, at most [`BPF_MAXINSNS`] long (checked when built).
    filter: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompProgram")
            .field("instructions", &self.filter.len())
            .finish()
    }
}

impl SeccompProgram {
    /// Docker's default profile for the running architecture (x86_64 and aarch64).
    pub fn docker_default() -> Result<SeccompProgram, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH))?;
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return Err(SeccompError::UnsupportedArch(std::env::consts::ARCH));
        }

        // `c_long` is `i64` on every architecture with a table (the conversions are for the rest).
        #[allow(clippy::useless_conversion)]
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
            .iter()
            .map(|&(_, nr)| (i64::from(nr), Vec::new()))
            .collect();

        // personality: denied when the argument is none of the allowed ones (the conditions of
        // one rule are ANDed). The kernel takes an `unsigned int`, so compare the low 32 bits.
        let not_allowed = ALLOWED_PERSONALITIES
            .iter()
            .map(|&p| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
            .collect::<Result<Vec<_>, _>>()?;
        #[allow(clippy::useless_conversion)]
        rules.insert(
            i64::from(libc::SYS_personality),
            vec![SeccompRule::new(not_allowed)?],
        );

        // clone: denied when any namespace flag is set (one rule per flag; rules are ORed).
        // The flags are the first argument on x86_64 and aarch64 (not on s390x).
        let namespace_rules = CLONE_NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = u64::from(flag.unsigned_abs());
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )?;
                SeccompRule::new(vec![cond])
            })
            .collect::<Result<Vec<_>, _>>()?;
        #[allow(clippy::useless_conversion)]
        rules.insert(i64::from(libc::SYS_clone), namespace_rules);

        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno_u32(libc::EPERM)),
            arch,
        )?;
        let body: seccompiler::BpfProgram = filter.try_into()?;

        let mut program = prelude();
        program.extend(body.iter().map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        }));
        if program.len() > BPF_MAXINSNS {
            return Err(SeccompError::TooLarge(program.len()));
        }
        Ok(SeccompProgram { filter: program })
    }

    /// Installs the filter on the calling thread. MUST be async-signal-safe: it is called in a
    /// child process right after clone() from a multithreaded parent, so it must not allocate,
    /// lock, or call anything but raw syscalls (prctl / seccomp). It does NOT set no_new_privs
    /// itself (the caller does that first); it returns the raw errno on failure.
    pub fn install(&self) -> Result<(), rustix::io::Errno> {
        // The length fits: `docker_default` checked it against BPF_MAXINSNS (4096 < u16::MAX).
        let Ok(len) = u16::try_from(self.filter.len()) else {
            return Err(rustix::io::Errno::INVAL);
        };
        let prog = libc::sock_fprog {
            len,
            // The kernel only reads the instructions (copy_from_user).
            filter: self.filter.as_ptr().cast_mut(),
        };
        let op: libc::c_ulong = libc::SECCOMP_SET_MODE_FILTER.into();
        let flags: libc::c_ulong = 0;
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog) reads `prog` and the `len`
        // instructions it points at, both alive for the whole call; it writes no memory. The call
        // is a bare syscall: no allocation or lock, so it is async-signal-safe.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                op,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // Reading errno this way does not allocate (an `Os` error is a plain integer).
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL);
            Err(rustix::io::Errno::from_raw_os_error(errno))
        }
    }
}

/// `SECCOMP_RET_ERRNO` data for an errno constant (all positive and small).
fn errno_u32(errno: libc::c_int) -> u32 {
    errno.unsigned_abs()
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The hand-written start of the program: kill on a foreign architecture, `ENOSYS` for x32
/// numbers (x86_64) and for `clone3`; everything else falls through to `seccompiler`'s program
/// (which checks the architecture again and holds the denylist).
fn prelude() -> Vec<libc::sock_filter> {
    let enosys = libc::SECCOMP_RET_ERRNO | errno_u32(libc::ENOSYS);
    let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(u32::MAX);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, enosys),
    ]);
    p.extend([jump(BPF_JMP_JEQ_K, clone3, 0, 1), stmt(BPF_RET_K, enosys)]);
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Selects the probe a re-run of this test binary performs (see [`child_entry`]).
    const CHILD_ENV: &str = "RBUILD_SECCOMP_TEST_CHILD";

    // A small classic-BPF interpreter for the opcodes seccompiler and the prelude emit, to check
    // the program's verdicts for inputs a real kernel cannot produce here (x32, other arches).
    fn run_bpf(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            let k = ins.k;
            pc += 1;
            match ins.code {
                0x20 => {
                    let off = k as usize;
                    let bytes: [u8; 4] = data[off..off + 4].try_into().unwrap();
                    acc = u32::from_ne_bytes(bytes);
                }
                0x54 => acc &= k, // ALU AND K
                0x05 => pc += k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match ins.code {
                        0x15 => acc == k,
                        0x25 => acc > k,
                        0x35 => acc >= k,
                        _ => acc & k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return k,
                other => panic!("opcode {other:#x} not handled by the test interpreter"),
            }
        }
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    fn verdict(nr: libc::c_long, arg0: u64) -> u32 {
        let p = SeccompProgram::docker_default().unwrap();
        run_bpf(
            &p.filter,
            AUDIT_ARCH_NATIVE,
            nr as u32,
            [arg0, 0, 0, 0, 0, 0],
        )
    }

    #[test]
    fn builds_a_non_empty_program_within_the_kernel_limit() {
        let p = SeccompProgram::docker_default().unwrap();
        let len = p.filter.len();
        assert!(len > DENIED.len() && len <= BPF_MAXINSNS, "{p:?}");
        // Every name once, every number once.
        let mut numbers: Vec<_> = DENIED.iter().map(|d| d.1).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED.len());
    }

    #[test]
    fn verdicts_follow_docker_default() {
        for &(name, nr) in DENIED {
            assert_eq!(verdict(nr, 0), EPERM, "{name}");
        }
        for nr in [
            libc::SYS_getpid,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
        ] {
            assert_eq!(verdict(nr, 0), ALLOW, "syscall {nr}");
        }
        assert_eq!(verdict(libc::SYS_clone3, 0), ENOSYS);

        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(verdict(libc::SYS_clone, sigchld), ALLOW);
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64;
        assert_eq!(verdict(libc::SYS_clone, thread), ALLOW);
        for flag in CLONE_NAMESPACE_FLAGS {
            assert_eq!(
                verdict(libc::SYS_clone, flag as u64 | sigchld),
                EPERM,
                "{flag:#x}"
            );
        }
        // The kernel reads clone's flags as 32 bits: high bits neither deny nor hide a flag.
        assert_eq!(
            verdict(libc::SYS_clone, 0x7e02_0000_0000_0000 | sigchld),
            ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_clone, 0xffff_ffff_0000_0000 | 0x2_0000),
            EPERM
        );

        for p in ALLOWED_PERSONALITIES {
            assert_eq!(verdict(libc::SYS_personality, p), ALLOW, "{p:#x}");
        }
        for p in [0x4_0000u64, 0x1, 0x0400_0000, 0x0020_0000, 0xffff_fffe] {
            assert_eq!(verdict(libc::SYS_personality, p), EPERM, "{p:#x}");
        }
    }

    #[test]
    fn foreign_abis_are_denied() {
        let p = SeccompProgram::docker_default().unwrap();
        // i386 (int 0x80 on x86_64) and AArch32 (on aarch64): the whole process is killed.
        for foreign in [
            0x4000_0003u32, /* AUDIT_ARCH_I386 */
            0x4000_0028,    /* ARM */
        ] {
            let v = run_bpf(&p.filter, foreign, 20, [0; 6]);
            assert_eq!(v, libc::SECCOMP_RET_KILL_PROCESS);
        }
        #[cfg(target_arch = "x86_64")]
        {
            // x32: same audit arch, bit 30 in the number. `unshare` and `getpid` alike: ENOSYS.
            for nr in [
                libc::SYS_unshare,
                libc::SYS_getpid,
                512, /* x32 rt_sigaction */
            ] {
                let v = run_bpf(
                    &p.filter,
                    AUDIT_ARCH_NATIVE,
                    X32_SYSCALL_BIT | nr as u32,
                    [0; 6],
                );
                assert_eq!(v, ENOSYS, "x32 syscall {nr}");
            }
            assert_eq!(
                run_bpf(&p.filter, AUDIT_ARCH_NATIVE, u32::MAX, [0; 6]),
                ENOSYS
            );
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Expects a raw syscall's result `rc` to be -1 with `want`; exits with `code` otherwise.
    fn expect_errno(what: &str, rc: libc::c_long, want: i32, code: i32) {
        let got = errno();
        if rc != -1 || got != want {
            eprintln!("{what}: returned {rc}, errno {got}; wanted -1 with errno {want}");
            std::process::exit(code);
        }
    }

    fn expect_ok(what: &str, rc: libc::c_long, code: i32) {
        if rc < 0 {
            eprintln!("{what}: failed with errno {}", errno());
            std::process::exit(code);
        }
    }

    /// The probes, run in a child process with the filter installed. Exit code 0: all held.
    fn probe_filter() -> i32 {
        let Ok(prog) = SeccompProgram::docker_default() else {
            return 2;
        };
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 3;
        }
        if let Err(e) = prog.install() {
            eprintln!("install: {e}");
            return 4;
        }

        // SAFETY (all the raw syscalls below): integer arguments, or pointers to live locals and
        // NUL-terminated literals; none of them touches memory the test owns otherwise.
        unsafe {
            expect_errno(
                "unshare(CLONE_NEWNS)",
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS),
                libc::EPERM,
                10,
            );
            expect_errno(
                "keyctl(GET_KEYRING_ID)",
                libc::syscall(
                    libc::SYS_keyctl,
                    libc::KEYCTL_GET_KEYRING_ID,
                    libc::KEY_SPEC_SESSION_KEYRING,
                    0,
                ),
                libc::EPERM,
                11,
            );
            // Without the filter: ENOENT (the target does not exist), never a mount.
            expect_errno(
                "mount(tmpfs)",
                libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/nonexistent-rbuild-seccomp-test".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null::<libc::c_void>(),
                ),
                libc::EPERM,
                12,
            );
            // Without the filter: EFAULT/EINVAL for a null clone_args.
            expect_errno(
                "clone3(NULL)",
                libc::syscall(libc::SYS_clone3, std::ptr::null::<libc::c_void>(), 0),
                libc::ENOSYS,
                13,
            );
            let persona = libc::syscall(libc::SYS_personality, 0xffff_ffffu64);
            expect_ok("personality(0xffffffff)", persona, 14);
            expect_errno(
                "personality(ADDR_NO_RANDOMIZE)",
                libc::syscall(libc::SYS_personality, 0x0040000u64),
                libc::EPERM,
                15,
            );
            expect_ok(
                "personality(PER_LINUX)",
                libc::syscall(libc::SYS_personality, 0u64),
                16,
            );
            let rc = libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWNET | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            );
            if rc == 0 {
                // Only if the filter let it through: the new child leaves at once.
                libc::_exit(17);
            }
            expect_errno("clone(CLONE_NEWNET|SIGCHLD)", rc, libc::EPERM, 17);
            #[cfg(target_arch = "x86_64")]
            expect_errno(
                "x32 getpid",
                libc::syscall(libc::SYS_getpid | libc::c_long::from(X32_SYSCALL_BIT)),
                libc::ENOSYS,
                18,
            );

            // Ordinary syscalls still work.
            expect_ok("getpid", libc::syscall(libc::SYS_getpid), 20);
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            expect_ok("open(/dev/null)", fd.into(), 21);
            expect_ok(
                "write",
                libc::write(fd, b"x".as_ptr().cast(), 1) as libc::c_long,
                22,
            );
            libc::close(fd);
            // A plain fork through the raw clone syscall: the child exits at once.
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
            if pid == 0 {
                libc::_exit(7);
            }
            expect_ok("clone(SIGCHLD)", pid, 23);
            let mut status = 0;
            let waited = libc::waitpid(pid as libc::pid_t, &mut status, 0);
            if waited as libc::c_long != pid
                || !libc::WIFEXITED(status)
                || libc::WEXITSTATUS(status) != 7
            {
                return 24;
            }
        }
        // std's spawn (posix_spawn/vfork in glibc, clone3 first): clone3 fails with ENOSYS and
        // libc falls back to clone.
        match Command::new("/bin/sh").args(["-c", "exit 5"]).status() {
            Ok(s) if s.code() == Some(5) => {}
            other => {
                eprintln!("spawning /bin/sh: {other:?}");
                return 25;
            }
        }
        // Last: PTRACE_TRACEME would make the test harness our tracer if it succeeded.
        // SAFETY: integer arguments.
        let rc = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) };
        expect_errno("ptrace(PTRACE_TRACEME)", rc, libc::EPERM, 26);
        0
    }

    /// An i386 syscall (`int 0x80`) after installing the filter: the process must die of SIGSYS.
    #[cfg(target_arch = "x86_64")]
    fn probe_i386() -> i32 {
        let Ok(prog) = SeccompProgram::docker_default() else {
            return 2;
        };
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 3;
        }
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the live local; no core file for the expected SIGSYS.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        if prog.install().is_err() {
            return 4;
        }
        let ret: i64;
        // SAFETY: i386 getpid (20) through the compat entry; it takes no arguments and touches no
        // memory. The compat entry may clobber r8-r11, declared as such.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("rax") 20i64 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        eprintln!("the i386 getpid returned {ret} instead of killing the process");
        30
    }

    /// Entry point of the child processes: a no-op test unless [`CHILD_ENV`] names a probe, in
    /// which case it runs the probe and exits with its code.
    #[test]
    fn child_entry() {
        let Ok(mode) = std::env::var(CHILD_ENV) else {
            return;
        };
        let code = match mode.as_str() {
            "filter" => probe_filter(),
            #[cfg(target_arch = "x86_64")]
            "i386" => probe_i386(),
            _ => 1,
        };
        std::process::exit(code);
    }

    fn run_child(mode: &str) -> std::process::Output {
        let test = concat!(module_path!(), "::child_entry");
        let test = test.split_once("::").map_or(test, |(_crate, rest)| rest);
        Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, mode)
            .output()
            .unwrap()
    }

    #[test]
    fn installed_filter_denies_and_allows_in_a_real_process() {
        let out = run_child("filter");
        assert!(
            out.status.success(),
            "child probe failed: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_syscalls_kill_the_process() {
        let out = run_child("i386");
        if out.status.signal() == Some(libc::SIGSEGV) {
            eprintln!("SKIPPED: the kernel runs no i386 syscalls (ia32 emulation off)");
            return;
        }
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
