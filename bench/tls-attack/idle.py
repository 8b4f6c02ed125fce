import socket, ssl, sys, time, os
pid=int(sys.argv[1]); port=int(sys.argv[2]); mode=sys.argv[3]; n=int(sys.argv[4])
def rss(): 
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
base=rss(); conns=[]
for i in range(n):
    s=socket.socket(); s.bind((f"127.0.0.{2+i%200}",0)); s.connect(("127.0.0.1",port))
    if mode=="tls": s=ctx.wrap_socket(s)
    s.sendall(b"hello\n"); assert s.recv(100)==b"hello\n"
    conns.append(s)
time.sleep(1); after=rss()
print(f"{mode}: {n} idle conns after one echo: RSS {base} -> {after} KiB, {(after-base)/n:.1f} KiB/conn")
