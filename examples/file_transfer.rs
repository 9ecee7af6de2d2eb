//! Send a file from the command line to a receiving server that saves it into a folder, with a
//! progress bar on both ends.
//!
//! ```sh
//! cargo run --example file_transfer -- receive ./incoming          # listens on 127.0.0.1:7070
//! cargo run --example file_transfer -- send ./big.iso              # to 127.0.0.1:7070
//! cargo run --example file_transfer -- send ./big.iso 10.0.0.5:7070
//! ```

#[path = "support/logs.rs"]
mod logs;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use truflux::file::{FileSend, FileStatus};
use truflux::{Client, Server};

fn bar(len: Option<u64>, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len.unwrap_or(0));
    let template = "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Follows a transfer's status on a progress bar until it ends; why, if it did not finish.
async fn follow(
    mut updates: impl Stream<Item = FileStatus> + Unpin,
    bar: &ProgressBar,
) -> Result<(), String> {
    while let Some(status) = updates.next().await {
        match status {
            FileStatus::Transferring { bytes } => bar.set_position(bytes),
            FileStatus::Paused { bytes } => {
                bar.set_position(bytes);
                bar.set_message("paused");
            }
            FileStatus::Finished { size, sha256 } => {
                bar.set_position(size);
                let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
                bar.finish_with_message(format!("done, sha256 {hex}"));
                return Ok(());
            }
            FileStatus::Failed(error) => {
                bar.abandon_with_message(format!("failed: {error}"));
                return Err(error.to_string());
            }
            _ => {}
        }
    }
    Err("the transfer ended without a result".into())
}

/// Saves what peers offer into `dir` until Ctrl-C; then shuts the server down, which ends
/// unfinished transfers (their partial files are removed) before the process exits.
async fn receive(dir: PathBuf, addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&dir)?;
    let (tasks_tx, mut tasks) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp(addr)
        .on_file(move |peer, offer| {
            let dir = dir.clone();
            let from = peer.info().remote;
            let task = tokio::spawn(async move {
                let label = format!("{} from {from}", offer.safe_name().unwrap_or_default());
                let bar = bar(offer.size(), &label);
                // The offered name is the peer's: only its plain file name is used.
                match offer.accept_into(&dir).await {
                    Ok(receiving) => {
                        if let Err(error) = follow(receiving.updates(), &bar).await {
                            eprintln!("{label}: {error}");
                        }
                    }
                    Err(error) => eprintln!("{label}: not accepted: {error}"),
                }
            });
            let _ = tasks_tx.send(task);
        })
        .start()
        .await?;
    println!(
        "receiving files on {} into the chosen folder; Ctrl-C to stop",
        server.local_addrs()[0]
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    tasks.close();
    while let Some(task) = tasks.recv().await {
        let _ = task.await;
    }
    Ok(())
}

/// Sends `path` to `addr`; the bar shows what the receiver confirmed it wrote.
async fn send(path: &str, addr: &str) -> Result<Result<(), String>, Box<dyn std::error::Error>> {
    let client = Client::builder().connect(addr).await?;
    let size = std::fs::metadata(path)?.len();
    let sending: FileSend = client.peer().send_file(path).await?;
    let bar = bar(Some(size), path);
    bar.enable_steady_tick(Duration::from_millis(200));
    let finished = follow(sending.updates(), &bar).await;
    client.peer().close(truflux::Code::NORMAL, "sent").await;
    Ok(finished)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init("warn");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:7070".into());
    match args.first().map(String::as_str) {
        Some("receive") => {
            let dir = PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "incoming".into()));
            receive(dir, &addr).await?;
        }
        Some("send") => {
            let path = args.get(1).ok_or("usage: file_transfer send PATH [ADDR]")?;
            if let Err(error) = send(path, &addr).await? {
                eprintln!("{path}: {error}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: file_transfer receive [DIR] [ADDR] | send PATH [ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
