import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/**
 * The web console: built to dist-web/ (served by the daemon at /ui/). `npm run dev:web` serves
 * it with hot reload and forwards /1.0 (HTTP, SSE and WebSockets) to a daemon started with
 * `vmkit daemon --listen 127.0.0.1:8443 --insecure-http` (plain HTTP on loopback; VMKIT_WEB_DAEMON overrides the address).
 */
const root = fileURLToPath(new URL('.', import.meta.url));
const daemon = process.env.VMKIT_WEB_DAEMON ?? 'http://127.0.0.1:8443';

export default defineConfig({
  root,
  base: '/ui/',
  // React's automatic JSX runtime through esbuild: no Babel plugin needed.
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: fileURLToPath(new URL('../dist-web', import.meta.url)),
    emptyOutDir: true,
    // noVNC uses top-level await.
    target: 'es2022',
    chunkSizeWarningLimit: 1024,
    sourcemap: false,
  },
  server: {
    proxy: { '/1.0': { target: daemon, ws: true, changeOrigin: false } },
  },
  test: {
    root,
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
