// Layer normalisation over the channels of each row (PyTorch semantics: biased variance, eps inside the sqrt).
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Layer normalisation. N = rows (tokens), C = channels. The row kernels give each group one row at a
/// time (grid-stride over rows) and reduce through shared memory, so they are correct for any group
/// size up to <see cref="GroupReduce.MaxGroupSize"/>. Mean and variance are computed in two passes
/// over the row, which keeps rows with a large common offset (or all-equal rows) exact.
/// </summary>
public static class LayerNormKernels
{
    /// <summary>
    /// <c>output = (input - mean) * rstd * weight + bias</c> per row, saving <c>mean</c> and
    /// <c>rstd = 1 / sqrt(var + eps)</c> for the backward. Shapes: <c>output</c>, <c>input</c> (N, C);
    /// <c>mean</c>, <c>rstd</c> (N); <c>weight</c>, <c>bias</c> (C). <c>output</c> may alias <c>input</c>.
    /// </summary>
    public static void LayerNormForwardKernel(
        ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> weight, ArrayView<float> bias,
        int n, int c, float eps) =>
        LayerNormForwardGenericKernel<float, Fp32Storage>(output, mean, rstd, input, weight, bias, n, c, eps);

    /// <summary>
    /// <see cref="LayerNormForwardKernel"/> over a storage type for <c>output</c>, <c>input</c>, <c>weight</c> and
    /// <c>bias</c>: the statistics are summed in FP32 and saved in FP32, each output is rounded once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LayerNormForwardGenericKernel<T, S>(
        ArrayView<T> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<T> input, ArrayView<T> weight, ArrayView<T> bias,
        int n, int c, float eps)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int tid = Group.IdxX;
        int threads = Group.DimX;
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long offset = (long)row * c;
            float sum = 0f;
            for (int j = tid; j < c; j += threads)
                sum += st.ToFloat(input[offset + j]);
            float mu = GroupReduce.Sum(shared, sum) / c;

            float sq = 0f;
            for (int j = tid; j < c; j += threads)
            {
                float d = st.ToFloat(input[offset + j]) - mu;
                sq += d * d;
            }
            float variance = GroupReduce.Sum(shared, sq) / c;
            float rs = 1f / XMath.Sqrt(variance + eps);

            for (int j = tid; j < c; j += threads)
                output[offset + j] = st.FromFloat((st.ToFloat(input[offset + j]) - mu) * rs * st.ToFloat(weight[j]) + st.ToFloat(bias[j]));
            if (tid == 0)
            {
                mean[row] = mu;
                rstd[row] = rs;
            }
        }
    }

    /// <summary>
    /// The input gradient, per row: with <c>xhat = (x - mean) * rstd</c> and <c>g = dOutput * weight</c>,
    /// <c>dInput = rstd * (g - mean(g) - xhat * mean(g * xhat))</c>, assigned, or added when
    /// <paramref name="accumulate"/> is non-zero. Shapes: <c>dInput</c>, <c>dOutput</c>, <c>input</c> (N, C);
    /// <c>weight</c> (C); <c>mean</c>, <c>rstd</c> (N). <c>dInput</c> may alias <c>dOutput</c> (each thread
    /// reads and writes only its own elements).
    /// </summary>
    public static void LayerNormBackwardInputKernel(
        ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input, ArrayView<float> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, int accumulate) =>
        LayerNormBackwardInputGenericKernel<float, Fp32Storage>(dInput, dOutput, input, weight, mean, rstd, n, c, accumulate);

    /// <summary>
    /// <see cref="LayerNormBackwardInputKernel"/> over a storage type for <c>dInput</c>, <c>dOutput</c>, <c>input</c>
    /// and <c>weight</c>: row sums in FP32, each result (plus the widened old value when accumulating) rounded once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LayerNormBackwardInputGenericKernel<T, S>(
        ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input, ArrayView<T> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, int accumulate)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int tid = Group.IdxX;
        int threads = Group.DimX;
        for (int row = Grid.IdxX; row < n; row += Grid.DimX)
        {
            long offset = (long)row * c;
            float mu = mean[row];
            float rs = rstd[row];
            float sumG = 0f;
            float sumGX = 0f;
            for (int j = tid; j < c; j += threads)
            {
                float g = st.ToFloat(dOutput[offset + j]) * st.ToFloat(weight[j]);
                float xhat = (st.ToFloat(input[offset + j]) - mu) * rs;
                sumG += g;
                sumGX += g * xhat;
            }
            float meanG = GroupReduce.Sum(shared, sumG) / c;
            float meanGX = GroupReduce.Sum(shared, sumGX) / c;

            for (int j = tid; j < c; j += threads)
            {
                float g = st.ToFloat(dOutput[offset + j]) * st.ToFloat(weight[j]);
                float xhat = (st.ToFloat(input[offset + j]) - mu) * rs;
                float dx = rs * (g - meanG - xhat * meanGX);
                if (accumulate != 0)
                    dInput[offset + j] = st.FromFloat(st.ToFloat(dInput[offset + j]) + dx);
                else
                    dInput[offset + j] = st.FromFloat(dx);
            }
        }
    }

    /// <summary>
    /// The parameter gradients, accumulated: <c>dWeight[j] += sum over rows of dOutput * xhat</c>,
    /// <c>dBias[j] += sum over rows of dOutput</c>. Deterministic, without atomics: a group owns a tile of
    /// <c>min(32, Group.DimX)</c> columns (grid-stride over tiles); its threads split the rows into
    /// interleaved lanes and the lane sums are added in a fixed order. Shapes: <c>dWeight</c>,
    /// <c>dBias</c> (C); <c>dOutput</c>, <c>input</c> (N, C); <c>mean</c>, <c>rstd</c> (N). Both sums are multiplied by
    /// <c>scale</c> before they are added (1: unchanged bit for bit; a unit-scaled model passes 1/sqrt(N)).
    /// </summary>
    public static void LayerNormBackwardParamsKernel(
        ArrayView<float> dWeight, ArrayView<float> dBias, ArrayView<float> dOutput, ArrayView<float> input,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, float scale) =>
        LayerNormBackwardParamsGenericKernel<float, Fp32Storage>(dWeight, dBias, dOutput, input, mean, rstd, n, c, scale);

    /// <summary>
    /// <see cref="LayerNormBackwardParamsKernel"/> with <c>dOutput</c> and <c>input</c> in a storage type; the sums and
    /// the gradients <c>dWeight</c>, <c>dBias</c> stay FP32 (they accumulate over micro-batches).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LayerNormBackwardParamsGenericKernel<T, S>(
        ArrayView<float> dWeight, ArrayView<float> dBias, ArrayView<T> dOutput, ArrayView<T> input,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, float scale)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var sharedW = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var sharedB = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int tid = Group.IdxX;
        int width = XMath.Min(32, Group.DimX);
        int lanes = Group.DimX / width;
        int col = tid % width;
        int lane = tid / width;
        int tiles = (c + width - 1) / width;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int j = tile * width + col;
            float accW = 0f;
            float accB = 0f;
            // Threads past the last full lane (group size not a multiple of the width) stay idle but still meet the barriers.
            if (j < c && lane < lanes)
            {
                for (int row = lane; row < n; row += lanes)
                {
                    long at = (long)row * c + j;
                    float dout = st.ToFloat(dOutput[at]);
                    accW += dout * (st.ToFloat(input[at]) - mean[row]) * rstd[row];
                    accB += dout;
                }
            }
            sharedW[tid] = accW;
            sharedB[tid] = accB;
            Group.Barrier();
            if (lane == 0 && j < c)
            {
                float w = 0f;
                float b = 0f;
                for (int l = 0; l < lanes; l++)
                {
                    w += sharedW[l * width + col];
                    b += sharedB[l * width + col];
                }
                dWeight[j] += w * scale;
                dBias[j] += b * scale;
            }
            Group.Barrier();
        }
    }
}
