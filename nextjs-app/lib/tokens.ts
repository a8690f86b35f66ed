// Tokens for the gateway: HS256 JWTs signed with WS_SECRET (which the gateway hands to this
// process and verifies with), short-lived: the centrifuge SDK asks again before they expire.
import { SignJWT, type JWTPayload } from "jose";

export async function signGatewayToken(
  subject: string,
  claims: JWTPayload,
  ttl = "60s",
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(subject)
    .setIssuedAt()
    .setExpirationTime(ttl)
    .sign(new TextEncoder().encode(process.env.WS_SECRET));
}
