// Versions checked together: AGP 8.11.1 needs Gradle >= 8.13 (gradle/wrapper/gradle-wrapper.properties)
// and JDK 17, and supports compileSdk up to 36; Kotlin 2.2.0 reads the Kotlin metadata of current AARs.
plugins {
    id("com.android.application") version "8.11.1" apply false
    id("org.jetbrains.kotlin.android") version "2.2.0" apply false
    id("org.jetbrains.kotlin.jvm") version "2.2.0" apply false
}
