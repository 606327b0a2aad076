//! Running the loaded program on a packet with no interface
//! (`BPF_PROG_TEST_RUN`): golden tests and the benchmark. aya 0.14 wraps
//! the bpf(2) command itself (`aya::programs::TestRun`), so this module
//! adds no unsafe code: it sizes the output buffer, trims it to what the
//! kernel wrote and names the XDP verdicts.

use aya::programs::{ProgramError, Xdp};
use aya::{TestRun, TestRunOptions};

/// XDP verdicts (enum xdp_action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl Action {
    pub fn from_raw(v: u32) -> Self {
        match v {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Other(other),
        }
    }

    /// The program sent the packet on itself (rewritten).
    pub fn is_forward(self) -> bool {
        matches!(self, Self::Tx | Self::Redirect)
    }
}

/// What one test run returned.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    /// The packet as the program left it (rewritten on a forward).
    pub data: Vec<u8>,
    /// Mean run time per repetition, as the kernel measured it.
    pub duration: std::time::Duration,
}

/// Room for the program to grow a packet (it never does today; the kernel
/// refuses a too small data_out with ENOSPC).
const OUT_SLACK: usize = 256;

/// Run `prog` on `packet` `repeat` times (>= 1; the kernel counts 0 as 1).
/// The ingress interface is the loopback device of the caller's network
/// namespace, as the kernel provides it when no context is passed.
pub fn run(prog: &Xdp, packet: &[u8], repeat: u32) -> Result<Outcome, ProgramError> {
    let mut out = vec![0u8; packet.len() + OUT_SLACK];
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        repeat: repeat.max(1),
        ..TestRunOptions::default()
    };
    let result = prog.test_run(opts)?;
    out.truncate(usize::try_from(result.data_size_out).unwrap_or(usize::MAX));
    Ok(Outcome {
        action: Action::from_raw(result.return_value),
        data: out,
        duration: result.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_named_and_only_tx_and_redirect_forward() {
        let all: Vec<Action> = (0..6).map(Action::from_raw).collect();
        assert_eq!(
            all,
            [
                Action::Aborted,
                Action::Drop,
                Action::Pass,
                Action::Tx,
                Action::Redirect,
                Action::Other(5)
            ]
        );
        let forwards: Vec<bool> = all.iter().map(|a| a.is_forward()).collect();
        assert_eq!(forwards, [false, false, false, true, true, false]);
    }
}
