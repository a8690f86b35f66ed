// CommonJS, so that Next.js 14 reads it too. BUILD_STANDALONE=1: output: 'standalone'.
module.exports = {
  poweredByHeader: false,
  output: process.env.BUILD_STANDALONE === "1" ? "standalone" : undefined,
};
