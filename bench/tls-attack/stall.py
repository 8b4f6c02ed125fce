import socket, ssl, sys, time
pid=int(sys.argv[1]); port=int(sys.argv[2]); mode=sys.argv[3]; n=int(sys.argv[4]); hold=float(sys.argv[5])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
base=rss(); conns=[]; t0=time.time()
for i in range(n):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.bind((f"127.0.0.{2+i%200}",0)); s.connect(("127.0.0.1",port))
    if mode=="tls": s=ctx.wrap_socket(s)
    s.sendall(b"big.bin\n"); conns.append(s)
time.sleep(3); after=rss()
print(f"{mode}: {n} stalled readers: RSS {base} -> {after} KiB, {(after-base)/n:.1f} KiB/reader", flush=True)
# how long until the server ends them: poll with a tiny non-blocking peek for RST/EOF? reading would drain. Instead watch /proc/net/tcp count
import subprocess
def alive():
    out=subprocess.run(["ss","-tn","state","established",f"( sport = :{port} )"],capture_output=True,text=True).stdout
    return len(out.strip().splitlines())-1
while time.time()-t0<hold:
    a=alive()
    if a<=0: break
    time.sleep(1)
print(f"{mode}: after {time.time()-t0:.0f}s server-side established: {alive()}  RSS {rss()} KiB")
