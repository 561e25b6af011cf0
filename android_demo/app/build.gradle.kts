import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "ai.nasnetedge.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "ai.nasnetedge.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        // the ExecuTorch AAR ships arm64-v8a and x86_64 native libraries only
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }
    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    androidResources {
        // large and incompressible; stored as they are, then copied once to internal storage
        noCompress += listOf("tflite", "pte")
    }
    packaging {
        // several native runtimes may each bring the NDK's C++ library
        jniLibs { pickFirsts += "**/libc++_shared.so" }
    }
}

kotlin {
    // the compilerOptions DSL: kotlinOptions { } is deprecated with an error in Kotlin 2.2
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation(project(":core"))
    implementation("androidx.core:core-ktx:1.13.1")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("com.google.android.material:material:1.12.0")
    val camerax = "1.5.2"
    implementation("androidx.camera:camera-core:$camerax")
    implementation("androidx.camera:camera-camera2:$camerax")
    implementation("androidx.camera:camera-lifecycle:$camerax")
    implementation("androidx.camera:camera-view:$camerax")
    // LiteRT (the successor of TensorFlow Lite), Interpreter API with XNNPACK built in and the GPU
    // delegate. Stay on the 1.4.x line: LiteRT 2.x runs the Interpreter API on the CPU only (its GPU
    // path is the CompiledModel API). litert-gpu-api holds GpuDelegateFactory.Options, the supertype
    // of the GpuDelegate.Options that CompatibilityList returns.
    val litert = "1.4.2"
    implementation("com.google.ai.edge.litert:litert:$litert")
    implementation("com.google.ai.edge.litert:litert-gpu:$litert")
    implementation("com.google.ai.edge.litert:litert-gpu-api:$litert")
    // ExecuTorch as the second runtime (.pte programs lowered to XNNPACK): the AAR of the same release
    // as the executorch==1.5.1 that exports the .pte (pyproject.toml), so the runtime reads its programs.
    implementation("org.pytorch:executorch-android:1.5.1")
}
