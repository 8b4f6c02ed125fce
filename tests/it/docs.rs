//! The documentation's examples are tests. Every ` ```console ` block of
//! README.md and docs/*.md runs against a daemon started from the embedded
//! default config (plus a metrics listener), on free ports, and its output
//! must be what the page shows; every ` ```toml ` block with a `[[listener]]`
//! must load; every relative link must lead to a file and heading that exist.
//!
//! The conventions (written for readers in docs/development.md, "The
//! examples are tests"):
//! - `$ cmd` runs `cmd` with `sh -c` (stderr joined to stdout), in a fresh
//!   directory; a line ending in `\` continues on the next one;
//! - `> text` lines are the command's standard input;
//! - `[exit N]` is the exit status expected (0 without it);
//! - the other lines are the output, compared line by line and exactly,
//!   except for `...` alone on a line (any number of lines) and the
//!   placeholders `<time>` (a date and time, `2026-11-24 23:14:43`), `<n>`
//!   (a number, `12` or `0.4`), `<any>` (any text within the line) and
//!   `<a|b>` (one of the words given); blank lines at the end of an output
//!   are not compared.
//!
//! Each block gets its own daemon, download root and working directory, so a
//! block can be run by hand from a fresh start, whatever the blocks before
//! it did. A block that uses nc, curl or wget is skipped with a "skipped:"
//! line when the tool is missing, unless SWITCHBOARD_REQUIRE_NETCAT or
//! SWITCHBOARD_REQUIRE_HTTP_CLIENTS is set (as CI sets them).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use crate::cli::BIN;
use crate::common::LIMIT;

/// At least this many commands are extracted, so that a parsing mistake (a
/// renamed fence, a moved page) cannot make the test pass by running nothing.
const MIN_COMMANDS: usize = 50;

/// The pages whose examples are run, relative to the crate's root.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("read docs/").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A page's name as the messages show it (`docs/clients.md`).
fn shown(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One `$ ` command of a console block.
#[derive(Debug, Default, Clone)]
struct Example {
    line: usize,
    command: String,
    stdin: String,
    output: Vec<String>,
    exit: i32,
}

/// A console block: where it is, and its commands in order.
#[derive(Debug)]
struct Block {
    page: String,
    line: usize,
    examples: Vec<Example>,
}

/// The fenced blocks of a page with the given info string: (first line of
/// the block's content, 1-based; the content's lines).
fn fenced<'a>(text: &'a str, info: &str) -> Vec<(usize, Vec<&'a str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    let mut in_other = false;
    for (i, line) in text.lines().enumerate() {
        if let Some((start, lines)) = current.as_mut() {
            if line.starts_with("```") {
                blocks.push((*start, std::mem::take(lines)));
                current = None;
            } else {
                lines.push(line);
            }
        } else if in_other {
            in_other = !line.starts_with("```");
        } else if let Some(rest) = line.strip_prefix("```") {
            if rest.trim() == info {
                current = Some((i + 2, Vec::new()));
            } else {
                in_other = true;
            }
        }
    }
    assert!(current.is_none(), "a ```{info} block is not closed");
    blocks
}

/// Parses a console block into its commands (see the module's conventions).
fn parse_block(page: &str, start: usize, lines: &[&str]) -> Block {
    let mut examples: Vec<Example> = Vec::new();
    let mut continued = false;
    for (i, line) in lines.iter().enumerate() {
        let at = format!("{page}:{}", start + i);
        if continued {
            let example = examples.last_mut().expect("a command to continue");
            example.command.push('\n');
            example.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            examples.push(Example {
                line: start + i,
                command: command.to_owned(),
                ..Example::default()
            });
            continued = line.ends_with('\\');
        } else {
            let example = examples
                .last_mut()
                .unwrap_or_else(|| panic!("{at}: {line:?} comes before any `$ ` command"));
            if let Some(input) = line.strip_prefix("> ") {
                example.stdin.push_str(input);
                example.stdin.push('\n');
            } else if let Some(code) = line
                .strip_prefix("[exit ")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                example.exit = code
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: {line:?} is not [exit N]"));
            } else {
                example.output.push((*line).to_owned());
            }
        }
    }
    for example in &mut examples {
        while example.output.last().is_some_and(|l| l.is_empty()) {
            example.output.pop();
        }
    }
    Block {
        page: page.to_owned(),
        line: start,
        examples,
    }
}

fn console_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    for path in pages() {
        let text = read(&path);
        for (start, lines) in fenced(&text, "console") {
            blocks.push(parse_block(&shown(&path), start, &lines));
        }
    }
    blocks
}

/// A piece of an output line as written in the docs.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Time,
    Number,
    Any,
    OneOf(Vec<&'a str>),
}

/// Splits a line of expected output into text and placeholders. Anything in
/// angle brackets that is not a placeholder (`<html>`) is text.
fn pieces(line: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut text_start = 0;
    let mut pos = 0;
    while let Some(open) = rest[pos..].find('<').map(|o| o + pos) {
        let Some(close) = rest[open..].find('>').map(|c| c + open) else {
            break;
        };
        let inner = &rest[open + 1..close];
        let piece = match inner {
            "time" => Some(Piece::Time),
            "n" => Some(Piece::Number),
            "any" => Some(Piece::Any),
            _ if inner.contains('|') && !inner.contains(['<', ' ']) => {
                Some(Piece::OneOf(inner.split('|').collect()))
            }
            _ => None,
        };
        match piece {
            Some(piece) => {
                if open > text_start {
                    out.push(Piece::Text(&rest[text_start..open]));
                }
                out.push(piece);
                rest = &rest[close + 1..];
                text_start = 0;
                pos = 0;
            }
            None => pos = open + 1,
        }
    }
    if !rest[text_start..].is_empty() {
        out.push(Piece::Text(&rest[text_start..]));
    }
    out
}

/// The lengths (in bytes) of the prefixes of `s` that `piece` can match.
fn prefixes(piece: &Piece<'_>, s: &str) -> Vec<usize> {
    match piece {
        Piece::Text(t) => s.starts_with(t).then_some(t.len()).into_iter().collect(),
        Piece::OneOf(words) => words
            .iter()
            .filter(|w| s.starts_with(**w))
            .map(|w| w.len())
            .collect(),
        Piece::Any => s.char_indices().map(|(i, _)| i).chain([s.len()]).collect(),
        Piece::Number => {
            let digits = |from: usize| s[from..].bytes().take_while(u8::is_ascii_digit).count();
            let whole = digits(0);
            if whole == 0 {
                return Vec::new();
            }
            let mut ends = vec![whole];
            if s[whole..].starts_with('.') {
                let fraction = digits(whole + 1);
                if fraction > 0 {
                    ends.push(whole + 1 + fraction);
                }
            }
            ends
        }
        Piece::Time => {
            // %Y-%m-%d %H:%M:%S, the keyword-bot's default time_format.
            let shape = b"dddd-dd-dd dd:dd:dd";
            let fits = s.len() >= shape.len()
                && s.bytes().zip(shape.iter()).all(|(c, want)| match want {
                    b'd' => c.is_ascii_digit(),
                    _ => c == *want,
                });
            fits.then_some(shape.len()).into_iter().collect()
        }
    }
}

fn line_matches(pattern: &[Piece<'_>], actual: &str) -> bool {
    match pattern.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) => prefixes(first, actual)
            .into_iter()
            .any(|len| line_matches(rest, &actual[len..])),
    }
}

/// Whether the actual lines are what the expected ones (with `...` lines and
/// placeholders) describe.
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual.split_first().is_some_and(|(line, others)| {
            line_matches(&pieces(first), line) && output_matches(rest, others)
        }),
    }
}

/// The tools a command needs that may be missing, with the variable that
/// makes their absence a failure.
const TOOLS: &[(&str, &[&str], &str)] = &[
    ("nc", &["-h"], "SWITCHBOARD_REQUIRE_NETCAT"),
    ("curl", &["--version"], "SWITCHBOARD_REQUIRE_HTTP_CLIENTS"),
    ("wget", &["--version"], "SWITCHBOARD_REQUIRE_HTTP_CLIENTS"),
];

/// The tools of [`TOOLS`] that `command` runs (as a word of it).
fn tools_in(command: &str) -> Vec<&'static str> {
    TOOLS
        .iter()
        .map(|(tool, _, _)| *tool)
        .filter(|tool| {
            command
                .split(|c: char| c.is_whitespace() || "|;&()".contains(c))
                .any(|word| word == *tool)
        })
        .collect()
}

/// Whether `tool` runs here; panics when it does not and its variable says
/// it must.
fn have(tool: &str) -> bool {
    let (_, args, require) = TOOLS
        .iter()
        .find(|(name, _, _)| *name == tool)
        .expect("a known tool");
    // netcat-openbsd's -h exits 1: it runs, which is what matters.
    let found = std::process::Command::new(tool)
        .args(*args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os(require).is_some() {
        panic!("{tool} is required ({require} is set) but does not run");
    }
    found
}

/// The ports of the embedded default (and of its commented metrics
/// listener), each with a port free here for both TCP and UDP.
fn free_ports() -> Vec<(u16, u16)> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for default in [10010u16, 1111, 10086, 10087, 9100] {
        let port = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
            let port = tcp.local_addr().expect("its address").port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                held.push((tcp, udp));
                break port;
            }
        };
        ports.push((default, port));
    }
    ports
}

/// A file of `len` varied bytes, the same every run.
fn varied(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The download root the examples assume: `hello.txt`, `big.iso` and a
/// `docs/` tree.
fn seed_root(root: &Path) {
    let write = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write a seed file");
    };
    write("hello.txt", b"hello, world\n");
    write("big.iso", &varied(3 << 20));
    write("docs/guide.txt", b"a guide\n");
    write("docs/nested/notes.txt", b"some notes\n");
    write(".hidden", b"not served\n");
}

/// A daemon of the embedded default (plus metrics), serving a seeded root.
struct Daemon {
    child: Child,
    ports: Vec<(u16, u16)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    work: PathBuf,
}

impl Daemon {
    async fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("files");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir work");
        seed_root(&root);
        let ports = free_ports();
        let mut toml = switchboard::config::EMBEDDED_DEFAULT.to_owned();
        toml.push_str(
            "\n[[listener]]\nname = \"metrics\"\nbind = \"127.0.0.1:9100\"\nhandler = \"metrics\"\n",
        );
        for (default, port) in &ports {
            toml = toml.replace(
                &format!("\"127.0.0.1:{default}\""),
                &format!("\"127.0.0.1:{port}\""),
            );
        }
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, &toml).expect("write the config");
        let log = dir.path().join("daemon.log");
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&config)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start the daemon");
        // The banner: a header, then one line per listener, once all are bound.
        let listeners = toml.matches("\n[[listener]]").count();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        for _ in 0..=listeners {
            let n = timeout(LIMIT, stdout.read_line(&mut banner))
                .await
                .expect("the daemon printed its banner in time")
                .expect("read the banner");
            assert!(
                n > 0,
                "the daemon ended: {banner}{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        // Whatever else it prints is read and dropped, so it never blocks.
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
        });
        Daemon {
            child,
            ports,
            log,
            _dir: dir,
            work,
        }
    }

    /// `command` with the default ports replaced by this daemon's.
    fn rewrite(&self, command: &str) -> String {
        let mut here = command.to_owned();
        for (default, port) in &self.ports {
            for sep in [":", " "] {
                here = here.replace(
                    &format!("127.0.0.1{sep}{default}"),
                    &format!("127.0.0.1{sep}{port}"),
                );
            }
        }
        here
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(LIMIT, self.child.wait()).await;
    }
}

/// Runs one example; returns a description of the difference, if any.
async fn run(daemon: &Daemon, example: &Example) -> Option<String> {
    let command = daemon.rewrite(&example.command);
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("a PATH");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(&daemon.work)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sh runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = example.stdin.clone();
    // Written from a task: a command that does not read its input must not
    // block the test, and the pipe closes when all of it is written.
    tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let output = match timeout(LIMIT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for sh"),
        Err(_) => return Some(format!("did not finish within {LIMIT:?}")),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut actual: Vec<&str> = text.lines().collect();
    while actual.last().is_some_and(|l| l.is_empty()) {
        actual.pop();
    }
    let code = output.status.code().unwrap_or(-1);
    if output_matches(&example.output, &actual) && code == example.exit {
        return None;
    }
    let mut why = format!("exit {code} (expected {})\n", example.exit);
    let _ = writeln!(why, "--- expected\n{}", example.output.join("\n"));
    let _ = writeln!(why, "--- got\n{text}---");
    Some(why)
}

#[tokio::test]
async fn every_console_example_of_the_docs_runs_as_shown() {
    let blocks = console_blocks();
    let commands: usize = blocks.iter().map(|b| b.examples.len()).sum();
    assert!(
        commands >= MIN_COMMANDS,
        "only {commands} commands found in the console blocks (at least {MIN_COMMANDS} expected)"
    );
    let mut available: HashMap<&str, bool> = HashMap::new();
    let (mut ran, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for block in &blocks {
        let mut needs: Vec<&str> = block
            .examples
            .iter()
            .flat_map(|e| tools_in(&e.command))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        let missing: Vec<&str> = needs
            .into_iter()
            .filter(|tool| !*available.entry(tool).or_insert_with(|| have(tool)))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "skipped: {}:{}: {} not installed",
                block.page,
                block.line,
                missing.join(", ")
            );
            skipped += block.examples.len();
            continue;
        }
        let daemon = Daemon::start().await;
        for example in &block.examples {
            ran += 1;
            if let Some(why) = run(&daemon, example).await {
                failures.push(format!(
                    "{}:{}: $ {}\n{why}\ndaemon log:\n{}",
                    block.page,
                    example.line,
                    example.command,
                    std::fs::read_to_string(&daemon.log).unwrap_or_default()
                ));
            }
        }
        daemon.stop().await;
    }
    assert_eq!(ran + skipped, commands);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("ran {ran} documented commands, skipped {skipped}");
}

/// An example's paths made real: the certificate files of a
/// `[listener.tls]` (and its client CA) become test files made here, and a
/// download `root` that does not exist on this machine (`/srv/files`)
/// becomes an empty directory; every other line is checked as written.
fn with_local_files(toml: &str, dir: &std::path::Path) -> String {
    let pki = crate::certs::Pki::new(dir, "Docs CA");
    let pair = pki.server("docs", 90);
    let local = |key: &str, line: &str| -> Option<String> {
        let value = line
            .strip_prefix(key)?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        let path = value.split('#').next()?.trim().trim_matches(['"', '\'']);
        let local = match key {
            "cert" => pair.cert.clone(),
            "key" => pair.key.clone(),
            "client_ca" => pki.ca_pem.clone(),
            _ if Path::new(path).is_dir() => return None,
            _ => {
                let root = dir.join("root");
                std::fs::create_dir_all(&root).expect("mkdir");
                root
            }
        };
        Some(format!("{key} = '{}'", local.display()))
    };
    toml.lines()
        .map(|line| {
            ["cert", "key", "client_ca", "root"]
                .iter()
                .find_map(|key| local(key, line))
                .unwrap_or_else(|| line.to_owned())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_toml_example_with_a_listener_loads() {
    let mut loaded = 0;
    let files = tempfile::tempdir().expect("tempdir");
    for path in pages() {
        let text = read(&path);
        for (start, lines) in fenced(&text, "toml") {
            let toml = lines.join("\n");
            if !toml.contains("[[listener]]") {
                continue;
            }
            let toml = if toml.contains("[listener.tls]") {
                with_local_files(&toml, files.path())
            } else {
                toml
            };
            let name = format!("{}:{start}", shown(&path));
            if let Err(e) = switchboard::Config::from_toml(&toml, &name) {
                panic!("{name}: the example does not load: {e}");
            }
            loaded += 1;
        }
    }
    assert!(
        loaded >= 3,
        "only {loaded} toml examples with a [[listener]]"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-`
/// and `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks), with GitHub's
/// `-1`, `-2` for repeated ones.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = anchor(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of a page's Markdown links `[text](target)`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code (`[text](x.md)` shown as an example) is no link.
        let outside_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = outside_code.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().expect("a directory");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            checked += 1;
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", shown(&page)));
                continue;
            }
            if let Some(fragment) = fragment {
                let known = path.extension().is_some_and(|e| e == "md")
                    && anchors(&read(&path)).iter().any(|a| a == fragment);
                if !known {
                    broken.push(format!("{}: {target}: no such heading", shown(&page)));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_output_patterns_match_what_they_say_and_nothing_else() {
    let yes = |pattern: &str, actual: &str| line_matches(&pieces(pattern), actual);
    assert!(yes("当前时间是:<time>", "当前时间是:2026-11-24 23:14:43"));
    assert!(!yes("当前时间是:<time>", "当前时间是:2026-11-24"));
    assert!(yes("echoed in <n> ms", "echoed in 0.4 ms"));
    assert!(!yes("echoed in <n> ms", "echoed in ms"));
    assert!(yes("<one|two>", "two"));
    assert!(!yes("<one|two>", "three"));
    assert!(yes("a <any> z", "a b c z"));
    assert!(!yes("a <any> z", "a b c"));
    assert!(yes("<html>", "<html>"));
    assert!(!yes("exact", "exact "));
    let lines = |s: &[&str]| s.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(output_matches(
        &lines(&["a", "...", "z"]),
        &["a", "b", "c", "z"]
    ));
    assert!(output_matches(&lines(&["a", "...", "z"]), &["a", "z"]));
    assert!(!output_matches(&lines(&["a", "...", "z"]), &["a", "b"]));
    assert!(!output_matches(&lines(&["a"]), &["a", "b"]));
    assert_eq!(
        anchor("UDP listeners (`transport = \"udp\"`)"),
        "udp-listeners-transport--udp"
    );
    assert_eq!(
        anchor("Behind a load balancer (PROXY protocol)"),
        "behind-a-load-balancer-proxy-protocol"
    );
}
