//! One multiplexed connection per backend (HTTP/2, HTTP/3), shared by every
//! request: the ready connection is read without a lock, and when there is
//! none exactly one dial runs while every request waiting for the backend
//! shares its outcome. A blackholed backend then costs each waiter one
//! connect timeout, not one each in turn behind a lock.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::stream::DialError;

/// A dial's outcome as every waiter sees it (`DialError` is not `Clone`).
#[derive(Clone)]
enum Dialed<S> {
    Ready(S),
    Failed {
        timeout: bool,
        os_error: Option<i32>,
        message: String,
    },
}

impl<S> Dialed<S> {
    fn from_error(e: &DialError) -> Self {
        let (timeout, os_error) = match e {
            DialError::Timeout(_) => (true, None),
            DialError::Refused(_, io) | DialError::Tls(_, io) => (false, io.raw_os_error()),
        };
        Self::Failed {
            timeout,
            os_error,
            message: e.to_string(),
        }
    }

    fn into_result(self, address: &str) -> Result<S, DialError> {
        match self {
            Self::Ready(s) => Ok(s),
            Self::Failed { timeout: true, .. } => Err(DialError::Timeout(address.to_owned())),
            Self::Failed {
                os_error, message, ..
            } => {
                // Keep the errno, so a local failure (EMFILE...) stays one.
                let io = match os_error {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(message),
                };
                Err(DialError::Refused(address.to_owned(), io))
            }
        }
    }
}

type Outcome<S> = watch::Receiver<Option<Dialed<S>>>;

pub(crate) struct SharedDial<S> {
    ready: ArcSwapOption<S>,
    dialing: Mutex<Option<Outcome<S>>>,
}

impl<S> Default for SharedDial<S> {
    fn default() -> Self {
        Self {
            ready: ArcSwapOption::empty(),
            dialing: Mutex::new(None),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> SharedDial<S> {
    /// The ready connection, if `usable` says it still is.
    pub(crate) fn current(&self, usable: impl Fn(&S) -> bool) -> Option<S> {
        self.ready
            .load_full()
            .filter(|s| usable(s))
            .map(|s| (*s).clone())
    }

    /// Forget the ready connection if `gone` says it is the one that ended
    /// (a newer one stays).
    pub(crate) fn clear_if(&self, gone: impl Fn(&S) -> bool) {
        self.ready
            .rcu(|cur| cur.as_ref().filter(|s| !gone(s)).map(Arc::clone));
    }

    /// Join the dial in progress, or start `dial` in its own task (it ends
    /// for the waiters even if the request that started it goes away).
    pub(crate) async fn get_or_dial<F, Fut>(
        self: &Arc<Self>,
        address: &str,
        dial: F,
    ) -> Result<S, DialError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, DialError>> + Send + 'static,
    {
        let mut outcome = {
            let mut dialing = self.dialing.lock().unwrap_or_else(PoisonError::into_inner);
            match dialing.as_ref() {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *dialing = Some(rx.clone());
                    let shared = Arc::clone(self);
                    let fut = dial();
                    tokio::spawn(async move {
                        let dialed = match fut.await {
                            Ok(s) => {
                                shared.ready.store(Some(Arc::new(s.clone())));
                                Dialed::Ready(s)
                            }
                            Err(e) => Dialed::from_error(&e),
                        };
                        *shared
                            .dialing
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                        let _ = tx.send(Some(dialed));
                    });
                    rx
                }
            }
        };
        let waited = outcome.wait_for(Option::is_some).await;
        match waited.as_deref().ok().cloned().flatten() {
            Some(dialed) => dialed.into_result(address),
            None => Err(DialError::Refused(
                address.to_owned(),
                std::io::Error::other("the shared dial ended without an outcome"),
            )),
        }
    }
}
