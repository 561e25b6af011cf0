// Plain Kotlin/JVM module: frame processing with no Android dependency (compiled and unit-tested in CI
// with kotlinc and JUnit 4, see tests/test_android_core.py).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}
