export default function About() {
  return (
    <>
      <h1>About</h1>
      <p>
        The gateway supervises this Next.js server as a child process on loopback, restarts it
        when it crashes, and answers <code>503</code> with <code>Retry-After</code> while it is
        starting, so a deploy or a crash never turns into a hung request.
      </p>
    </>
  );
}
