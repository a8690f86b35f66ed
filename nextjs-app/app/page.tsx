export default function Home() {
  return (
    <>
      <h1>One port, one origin</h1>
      <p>
        This page is rendered by <code>next start</code> and served to you through the Tornado
        gateway, which also terminates WebSockets at <code>/connection/websocket</code>.
      </p>
      <p className="muted">
        Gateway health: <a href="/_gateway/health">/_gateway/health</a> ·{" "}
        <a href="/_gateway/ready">/_gateway/ready</a>
      </p>
    </>
  );
}
