import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// Built into panel/dist, which `tower api` serves at / (TOWER_PANEL_DIR overrides the folder).
// `npm run dev` proxies the API to a local `tower api` on its default port.
export default defineConfig({
  plugins: [vue()],
  base: './',
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8328',
      '/media': 'http://127.0.0.1:8328',
      '/health': 'http://127.0.0.1:8328',
    },
  },
})
