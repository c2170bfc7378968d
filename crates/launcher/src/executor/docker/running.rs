//! A started run container: waiting for its exit, its output, signals.

use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::query_parameters::KillContainerOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::engine_message;
use crate::executor::Exit;
use crate::logs::SpoolSink;

/// A started run container.
pub struct DockerRun {
    docker: Docker,
    id: String,
    /// Waits for the exit from the start on, so that [`DockerRun::wait`] can
    /// be polled and dropped as often as the caller likes.
    exit: JoinHandle<Exit>,
    output: Option<JoinHandle<()>>,
    sink: SpoolSink,
}

impl DockerRun {
    /// A container just started; `output` copies its attach stream to `sink`.
    pub(super) fn new(
        docker: Docker,
        id: String,
        output: JoinHandle<()>,
        sink: SpoolSink,
    ) -> DockerRun {
        let exit = tokio::spawn(wait_for_exit(docker.clone(), id.clone(), sink.clone()));
        DockerRun {
            docker,
            id,
            exit,
            output: Some(output),
            sink,
        }
    }

    /// The container's exit. Cancel-safe.
    pub async fn wait(&mut self) -> Exit {
        (&mut self.exit).await.unwrap_or(Exit::Code(-1))
    }

    pub fn stopper(&self) -> ContainerStopper {
        ContainerStopper {
            docker: self.docker.clone(),
            id: self.id.clone(),
        }
    }

    pub fn log_line(&mut self, text: &str) {
        self.sink.line(text);
    }

    /// The container has exited: its attach stream ends once the engine has
    /// sent the last of its output.
    pub async fn finish_output(mut self) {
        if let Some(mut output) = self.output.take() {
            if tokio::time::timeout(Duration::from_secs(10), &mut output)
                .await
                .is_err()
            {
                tracing::warn!(container = %self.id, "the run container's output did not end; cutting it off");
                output.abort();
            }
        }
    }
}

/// Signals a run's container (PID 1 in it; a KILL ends every process in it).
#[derive(Clone)]
pub struct ContainerStopper {
    docker: Docker,
    id: String,
}

impl ContainerStopper {
    pub fn signal(&self, signal: &'static str) {
        let ContainerStopper { docker, id } = self.clone();
        tokio::spawn(async move {
            let options = KillContainerOptionsBuilder::default()
                .signal(signal)
                .build();
            if let Err(error) = docker.kill_container(&id, Some(options)).await {
                // 409: it is not running (any more).
                tracing::debug!(container = %id, signal, error = %engine_message(&error), "signalling the run container failed");
            }
        });
    }
}

async fn wait_for_exit(docker: Docker, id: String, sink: SpoolSink) -> Exit {
    let mut failures = 0;
    let code = loop {
        match docker.wait_container(&id, None).next().await {
            Some(Ok(response)) => break response.status_code,
            Some(Err(EngineError::DockerContainerWaitError { code, .. })) => break code,
            Some(Err(EngineError::DockerResponseServerError {
                status_code: 404, ..
            })) => {
                sink.line("the run's container disappeared (removed outside Gantry)");
                return Exit::Code(-1);
            }
            other => {
                failures += 1;
                let error = match other {
                    Some(Err(error)) => engine_message(&error),
                    _ => "the engine closed the connection".to_string(),
                };
                if failures >= 60 {
                    sink.line(&format!("lost track of the run's container: {error}"));
                    return Exit::Code(-1);
                }
                tracing::warn!(container = %id, %error, "waiting for the run's container failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let code = i32::try_from(code).unwrap_or(-1);
    if code != 0 {
        if let Ok(container) = docker.inspect_container(&id, None).await {
            if container.state.and_then(|s| s.oom_killed) == Some(true) {
                return Exit::OutOfMemory(code);
            }
        }
    }
    Exit::Code(code)
}

pub(super) async fn copy_output(
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<Item = Result<bollard::container::LogOutput, EngineError>>
                + Send,
        >,
    >,
    sink: SpoolSink,
) {
    use bollard::container::LogOutput;
    while let Some(item) = output.next().await {
        match item {
            Ok(
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message },
            ) => {
                if sink.append(&message).is_err() {
                    break;
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                tracing::warn!(error = %engine_message(&error), "the run container's output stream failed");
                break;
            }
        }
    }
}
