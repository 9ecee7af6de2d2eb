//! Send a file from the command line to a receiving server that saves it into a folder, with a
//! progress bar on both ends.
//!
//! ```sh
//! cargo run --example file_transfer -- receive ./incoming          # listens on 127.0.0.1:7070
//! cargo run --example file_transfer -- send ./big.iso              # to 127.0.0.1:7070
//! cargo run --example file_transfer -- send ./big.iso 10.0.0.5:7070
//! ```

use std::time::Duration;

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

/// Follows a transfer's status on a progress bar until it ends.
async fn follow(
    mut next: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<FileStatus>> + Send>>,
    bar: &ProgressBar,
) {
    while let Some(status) = next().await {
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
            }
            FileStatus::Failed(error) => bar.abandon_with_message(format!("failed: {error}")),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("receive") => {
            let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "incoming".into()));
            std::fs::create_dir_all(&dir)?;
            let addr = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:7070".into());
            let server = Server::builder()
                .tcp(&addr)
                .on_file(move |peer, offer| {
                    let dir = dir.clone();
                    let from = peer.info().remote;
                    tokio::spawn(async move {
                        let label = format!("{} from {from}", offer.safe_name().unwrap_or_default());
                        let bar = bar(offer.size(), &label);
                        // The offered name is the peer's: only its plain file name is used.
                        match offer.accept_into(&dir).await {
                            Ok(receiving) => {
                                let receiving = std::sync::Arc::new(tokio::sync::Mutex::new(receiving));
                                follow(
                                    || {
                                        let receiving = receiving.clone();
                                        Box::pin(async move { receiving.lock().await.next_status().await })
                                    },
                                    &bar,
                                )
                                .await;
                            }
                            Err(error) => bar.abandon_with_message(format!("not accepted: {error}")),
                        }
                    });
                })
                .start()
                .await?;
            println!(
                "receiving files on {} into the chosen folder; Ctrl-C to stop",
                server.local_addrs()[0]
            );
            tokio::signal::ctrl_c().await?;
        }
        Some("send") => {
            let path = args.get(1).ok_or("usage: file_transfer send PATH [ADDR]")?;
            let addr = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:7070".into());
            let client = Client::builder().connect(addr.as_str()).await?;
            let size = std::fs::metadata(path)?.len();
            let sending: FileSend = client.peer().send_file(path).await?;
            let bar = bar(Some(size), path);
            bar.enable_steady_tick(Duration::from_millis(200));
            let sending = std::sync::Arc::new(tokio::sync::Mutex::new(sending));
            follow(
                || {
                    let sending = sending.clone();
                    Box::pin(async move { sending.lock().await.next_status().await })
                },
                &bar,
            )
            .await;
            client.peer().close(truflux::Code::NORMAL, "sent").await;
        }
        _ => {
            eprintln!("usage: file_transfer receive [DIR] [ADDR] | send PATH [ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
