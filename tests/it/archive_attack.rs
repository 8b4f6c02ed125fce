//! Folders as tar streams against a hostile tree (the attacker's second
//! pass): what a local user who can write into the served tree can make an
//! archive cost.

use std::fs;
use std::path::Path;

use tokio::io::AsyncWriteExt;

use crate::common::{self, TestServer};

fn server(root: &Path) -> TestServer {
    let path = root.to_str().expect("UTF-8 temp dir");
    TestServer::start(&common::listener(
        "dl",
        "download",
        &format!("root = '{path}'\n"),
    ))
}

/// `root/wide`: `files` empty files, each named with about 3.8 KB (folders
/// of 250-byte names 14 deep, then a 255-byte name), as long as PATH_MAX
/// lets a name below the root be.
fn long_names(root: &Path, files: usize) {
    let mut deep = root.join("wide");
    for level in 0..14 {
        deep.push(format!("{level:02}{}", "d".repeat(248)));
    }
    fs::create_dir_all(&deep).expect("deep folders");
    for i in 0..files {
        fs::File::create(deep.join(format!("{i:06}{}", "f".repeat(249)))).expect("a file");
    }
}

/// The status code of a HEAD of `path`.
async fn head_status(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = common::connect(addr).await;
    stream
        .write_all(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
    let response = common::read_to_end(&mut stream).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).unwrap_or("").to_owned()
}

/// Found by attack2: 18 000 members of 3.8 KB names make a layout of
/// ~70 MB, over the 64 MiB documented for all the listener's layouts
/// together, and it was walked and served; 100 000 of them took ~400 MB a
/// walk, 1.5 GB for 4 at once (VmHWM).
#[tokio::test]
async fn a_folder_whose_layout_alone_is_over_the_budget_is_refused() {
    let base = tempfile::tempdir().expect("tempdir");
    long_names(base.path(), 18_000);
    let server = server(base.path());
    let addr = server.addr("dl");
    assert_eq!(head_status(addr, "/wide.tar").await, "403");
    // Not held: the listener's budget is whole again for a small folder.
    fs::create_dir(base.path().join("small")).unwrap();
    fs::write(base.path().join("small/a"), b"a").unwrap();
    assert_eq!(head_status(addr, "/small.tar").await, "200");
}
