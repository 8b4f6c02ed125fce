import socket, ssl, sys, time, os
pid=int(sys.argv[1]); port=int(sys.argv[2]); n=int(sys.argv[3])
tck=os.sysconf("SC_CLK_TCK")
def cpu():
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/tck
for kind in ["nocert","chain"]:
    ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
    if kind=="chain": ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    time.sleep(1); c0=cpu(); t0=time.time()
    for i in range(n):
        s=socket.socket(); s.bind((f"127.0.0.{2+i%200}",0)); s.connect(("127.0.0.1",port))
        try:
            s=ctx.wrap_socket(s); s.sendall(b"x\n"); s.recv(10)
        except Exception as e: pass
        s.close()
    time.sleep(1); c1=cpu()
    print(f"{kind:7s}: {n} handshakes, daemon CPU {c1-c0:.2f}s = {(c1-c0)/n*1e6:.0f} us each (client wall {time.time()-t0-1:.1f}s)")
