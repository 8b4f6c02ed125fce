import socket, sys, time, struct
pid=int(sys.argv[1]); port=int(sys.argv[2]); n=int(sys.argv[3]); mode=sys.argv[4]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
# a ClientHello handshake message announcing 65000 bytes, of which 60000 are sent, in 16 KiB records
body=struct.pack(">B",1)+(65000).to_bytes(3,"big")+b"\x03"*59996
recs=b""
for i in range(0,len(body),16384):
    chunk=body[i:i+16384]; recs+=b"\x16\x03\x01"+struct.pack(">H",len(chunk))+chunk
plain=b"x"*60000  # a plaintext message without its newline
base=rss(); conns=[]; t0=time.time()
for i in range(n):
    s=socket.socket(); s.bind((f"127.0.0.{2+i%200}",0)); s.connect(("127.0.0.1",port))
    s.sendall(recs if mode=="tls" else plain); conns.append(s)
time.sleep(2)
print(f"{mode}: {n} connections holding 60 KB unfinished: RSS {base} -> {rss()} KiB, {(rss()-base)/n:.1f} KiB each")
