import { createApp } from 'vue'
import DirectorPanel from './DirectorPanel.vue'
import './panel.css'

createApp(DirectorPanel).mount('#app')
