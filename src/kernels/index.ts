export * from './backend.js';
export * from './linear.js';
