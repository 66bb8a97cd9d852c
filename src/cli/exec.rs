//! `tapnet exec` and the command half of `tapnet run`: run a program inside a sandbox's
//! namespaces with our stdio, and hand back its exit status.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use crate::api::types::SandboxView;
use crate::error::{Context, Error, Result};

/// Exit status like a shell reports it: the code, or 128 + the signal that killed it.
pub fn exec_in(sandbox: &SandboxView, command: &[String]) -> Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::invalid("no command given"))?;
    let netns = File::open(&sandbox.netns)
        .context(|| format!("open network namespace of sandbox {}", sandbox.name))?;
    let utsns = sandbox
        .utsns
        .as_ref()
        .map(File::open)
        .transpose()
        .context(|| format!("open UTS namespace of sandbox {}", sandbox.name))?;
    let mntns = sandbox
        .mntns
        .as_ref()
        .map(File::open)
        .transpose()
        .context(|| format!("open mount namespace of sandbox {}", sandbox.name))?;
    let net_fd: RawFd = netns.as_raw_fd();
    let uts_fd: Option<RawFd> = utsns.as_ref().map(|f| f.as_raw_fd());
    let mnt_fd: Option<RawFd> = mntns.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only setns, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = uts_fd
                && libc::setns(fd, libc::CLONE_NEWUTS) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Last: entering a mount namespace moves the root and working directory to its root.
            if let Some(fd) = mnt_fd
                && libc::setns(fd, libc::CLONE_NEWNS) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = match cmd.status() {
        Ok(status) => status,
        // As a shell does: 127 for a command that cannot be found, 126 for one not executable.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            eprintln!(
                "tapnet: error: cannot run {program} in sandbox {}: {e}",
                sandbox.name
            );
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
        Err(e) => {
            return Err(crate::error::Error::Io {
                context: format!("run {program} in sandbox {}", sandbox.name),
                source: e,
            });
        }
    };
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
