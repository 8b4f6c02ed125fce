import socket, ssl, sys, time, os
pid=int(sys.argv[1]); n=int(sys.argv[5])
ports={"tls":int(sys.argv[2]),"denied":int(sys.argv[3]),"plain":int(sys.argv[4])}
tck=os.sysconf("SC_CLK_TCK")
def cpu():
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/tck
ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
ctx.minimum_version=ssl.TLSVersion.TLSv1_3 if len(sys.argv)<7 else ssl.TLSVersion.TLSv1_2
if len(sys.argv)>6: ctx.maximum_version=ssl.TLSVersion.TLSv1_2
for kind in ["denied","plain","tls"]:
    time.sleep(1.5)
    c0=cpu(); t0=time.time()
    for i in range(n):
        s=socket.socket(); s.bind((f"127.0.0.{2+i%200}",0)); s.connect(("127.0.0.1",ports[kind]))
        if kind=="tls":
            s=ctx.wrap_socket(s); s.close()
        elif kind=="plain":
            s.sendall(b"x\n"); s.recv(10); s.close()
        else:
            s.recv(100); s.close()
    time.sleep(1.5)
    c1=cpu()
    print(f"{kind:7s}: {n} connections, daemon CPU {c1-c0:.2f}s = {(c1-c0)/n*1e6:.0f} us/conn  (client wall {time.time()-t0-1.5:.1f}s)")
