//! Whether a TCP socket still queues bytes its client has not taken: what
//! a finished response's sender asks before it gives back what bounded
//! that queue (a download slot).
//!
//! The kernel says it with no `unsafe` and no `TCP_INFO`: with
//! `TCP_NOTSENT_LOWAT` at 1, a socket polls writable only while none of
//! its queue is waiting to be sent (`tcp_stream_memory_free`: the unsent
//! bytes, doubled, below the mark), and while what is in flight is at
//! most two thirds of its send buffer. So: set the mark, poll without
//! waiting, and set it back to the system's (0), so that the sends that
//! follow are woken as before. Under the mark the kernel also wakes the
//! socket's writers once the queue is taken, which a wait can use.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// Whether `socket`'s send queue is taken: nothing of it waits unsent (a
/// reader that stopped leaves it at a zero window), and little is in
/// flight. A socket the peer reset, or that failed, has no queue left.
pub(crate) fn is_taken(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mark = Mark::set(socket)?;
    let taken = polls_taken(socket);
    mark.unset()?;
    taken
}

/// `TCP_NOTSENT_LOWAT` at 1 on a socket, for as long as it is kept: the
/// socket polls writable (and the kernel wakes its writers) only once
/// nothing of its queue waits unsent. Set back to the system's (0) by
/// [`Mark::unset`], or when dropped: a mark of 1 would wake each later send
/// only once the queue is empty, a round trip per wake.
pub(crate) struct Mark<'a> {
    socket: Option<BorrowedFd<'a>>,
}

impl<'a> Mark<'a> {
    /// Sets the mark on `socket`.
    pub(crate) fn set(socket: BorrowedFd<'a>) -> io::Result<Mark<'a>> {
        socket2::SockRef::from(&socket).set_tcp_notsent_lowat(1)?;
        Ok(Mark {
            socket: Some(socket),
        })
    }

    /// Sets the system's mark back (setting it wakes the socket's writers).
    pub(crate) fn unset(mut self) -> io::Result<()> {
        match self.socket.take() {
            Some(socket) => socket2::SockRef::from(&socket).set_tcp_notsent_lowat(0),
            None => Ok(()),
        }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            let _ = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(0);
        }
    }
}

/// Whether `socket`, under a [`Mark`], polls taken (writable, or reset, or
/// failed), without waiting.
pub(crate) fn polls_taken(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [PollFd::new(&socket, PollFlags::OUT)];
    poll(&mut fds, Some(&Timespec::default()))?;
    Ok(fds[0]
        .revents()
        .intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::is_taken;

    /// A connected pair on loopback: the server's end, the client's end
    /// (with a small receive buffer, so that a queue outgrows it).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        client
            .connect(&listener.local_addr().expect("addr").into())
            .expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (server, client.into())
    }

    #[test]
    fn a_queue_the_client_read_is_taken_and_one_it_did_not_is_not() {
        let (mut server, mut client) = pair();
        assert!(is_taken(server.as_fd()).expect("poll"), "nothing written");
        server.set_nonblocking(true).expect("nonblocking");
        let mut written = 0;
        let block = [7u8; 16 * 1024];
        // Until the client's window and the server's send buffer are full.
        for _ in 0..10_000 {
            match server.write(&block) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(written > 0);
        assert!(
            !is_taken(server.as_fd()).expect("poll"),
            "{written} bytes written, none read"
        );
        // The mark is set back: the socket is still one whose sends wake as
        // the system's setting says.
        let options = socket2::SockRef::from(&server);
        assert_eq!(options.tcp_notsent_lowat().expect("lowat"), 0);
        let mut read = 0;
        let mut buf = vec![0u8; 64 * 1024];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        while read < written {
            read += client.read(&mut buf).expect("read");
        }
        // The last acknowledgements may trail the last read by a moment.
        let mut taken = false;
        for _ in 0..1000 {
            taken = is_taken(server.as_fd()).expect("poll");
            if taken {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(taken, "the client read all {written} bytes");
    }

    #[test]
    fn a_reset_socket_has_nothing_queued() {
        let (mut server, client) = pair();
        server.write_all(&[1u8; 1024]).expect("write");
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("SO_LINGER");
        drop(client);
        let mut buf = [0u8; 2048];
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        // The reset is in once a read sees it.
        let _ = server.read(&mut buf);
        assert!(is_taken(server.as_fd()).expect("poll"));
    }
}
