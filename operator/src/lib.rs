//! sluice-operator
